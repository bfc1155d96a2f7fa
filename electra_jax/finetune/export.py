"""A fine-tuned model as an HF `…ForTokenClassification`, `…ForSequenceClassification` or
`…ForQuestionAnswering` (ELECTRA, ALBERT or BERT), with id2label/label2id, so that `transformers.pipeline(...)`
answers with our labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from electra_jax.config import ModelConfig
from electra_jax.families import family_of
from electra_jax.hf.names import convert, get_path


def classifier_rows(model: ModelConfig, head: str) -> tuple[str, list[tuple[str, str, str]]]:
    """(HF architecture, (our path, HF name, layout) rows): the family's base model under its task-model
    prefix, then its `head` ("token", "sequence" or "qa")."""
    hf = family_of(model).hf
    architecture, head_rows = {"token": hf.token_head, "sequence": hf.sequence_head, "qa": hf.qa_head}[head]
    body = [(ours, hf.prefix + name, layout) for ours, name, layout in hf.rows(model, hf.base)
            if not (head != "sequence" and ours.startswith("pooler/"))]  # only the sequence heads pool
    return architecture, body + head_rows


def hf_classifier_config(model: ModelConfig, architecture: str, labels: list[str],
                         problem_type: str = "single_label_classification") -> dict:
    settings = family_of(model).hf.base_config(model)
    settings.update(architectures=[architecture], num_labels=len(labels),
                    id2label={str(i): label for i, label in enumerate(labels)},
                    label2id={label: i for i, label in enumerate(labels)})
    if architecture.endswith("SequenceClassification"):
        settings["problem_type"] = problem_type  # regression: one output, MSE (transformers reads it so)
    return settings


def export_classifier(model, params: dict, labels: list[str], tokenizer_dir: Path, out: Path, head: str,
                      problem_type: str | None = "single_label_classification", settings: dict | None = None) -> str:
    """Writes `out` (model.safetensors, config.json, the tokenizer files); returns the HF architecture.
    `settings` go into config.json as `electra_jax_finetune` (transformers keeps unknown keys), for
    `electra-jax predict`."""
    from safetensors.numpy import save_file

    from electra_jax.data.text_tokenizer import copy_tokenizer
    architecture, rows = classifier_rows(model.config, head)
    tensors = {hf: convert(np.asarray(get_path(params, ours)), layout) for ours, hf, layout in rows}
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    hf_config = hf_classifier_config(model.config, architecture, labels, problem_type)
    if settings:
        hf_config["electra_jax_finetune"] = settings
    (out / "config.json").write_text(json.dumps(hf_config, indent=2, ensure_ascii=False) + "\n")
    copy_tokenizer(tokenizer_dir, out)
    return architecture
