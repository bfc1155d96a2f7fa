"""A fine-tuned classifier as an HF `…ForTokenClassification` or `…ForSequenceClassification` (ELECTRA,
ALBERT or BERT), with id2label/label2id, so that `transformers.pipeline(...)` answers with our labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from electra_jax.config import ModelConfig
from electra_jax.families import family_of
from electra_jax.hf.names import convert, get_path


def classifier_rows(model: ModelConfig, per_token: bool) -> tuple[str, list[tuple[str, str, str]]]:
    """(HF architecture, (our path, HF name, layout) rows): the family's base model under its task-model
    prefix, then its token or sequence head."""
    hf = family_of(model).hf
    architecture, head = hf.token_head if per_token else hf.sequence_head
    body = [(ours, hf.prefix + name, layout) for ours, name, layout in hf.rows(model, hf.base)
            if not (per_token and ours.startswith("pooler/"))]  # the token heads have no pooler
    return architecture, body + head


def hf_classifier_config(model: ModelConfig, architecture: str, labels: list[str]) -> dict:
    settings = family_of(model).hf.base_config(model)
    settings.update(architectures=[architecture], num_labels=len(labels),
                    id2label={str(i): label for i, label in enumerate(labels)},
                    label2id={label: i for i, label in enumerate(labels)})
    if architecture.endswith("SequenceClassification"):
        settings["problem_type"] = "single_label_classification"
    return settings


def export_classifier(model, params: dict, labels: list[str], tokenizer_dir: Path, out: Path) -> str:
    """Writes `out` (model.safetensors, config.json, the tokenizer files); returns the HF architecture."""
    from safetensors.numpy import save_file

    from electra_jax.data.text_tokenizer import copy_tokenizer
    architecture, rows = classifier_rows(model.config, model.per_token)
    tensors = {hf: convert(np.asarray(get_path(params, ours)), layout) for ours, hf, layout in rows}
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    settings = hf_classifier_config(model.config, architecture, labels)
    (out / "config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    copy_tokenizer(tokenizer_dir, out)
    return architecture
