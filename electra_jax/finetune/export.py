"""A fine-tuned classifier as an HF `…ForTokenClassification` or `…ForSequenceClassification` (ELECTRA,
ALBERT or BERT), with id2label/label2id, so that `transformers.pipeline(...)` answers with our labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from electra_jax.config import Config, ModelConfig
from electra_jax.hf.names import (ALBERT_PREFIX, BERT_PREFIX, ENCODER_PREFIX, SAME, TRANSPOSE, albert_rows, bert_rows,
                                  convert, get_path, rows_for)


def _linear(ours: str, hf: str) -> list[tuple[str, str, str]]:
    return [(f"{ours}/kernel", f"{hf}.weight", TRANSPOSE), (f"{ours}/bias", f"{hf}.bias", SAME)]


# (architecture, head rows) per (body, per_token)
HEADS = {
    ("electra", True): ("ElectraForTokenClassification", _linear("classifier", "classifier")),
    ("electra", False): ("ElectraForSequenceClassification", _linear("classifier_dense", "classifier.dense")
                         + _linear("classifier_out_proj", "classifier.out_proj")),
    ("albert", True): ("AlbertForTokenClassification", _linear("classifier", "classifier")),
    ("albert", False): ("AlbertForSequenceClassification", _linear("classifier", "classifier")),
    ("bert", True): ("BertForTokenClassification", _linear("classifier", "classifier")),
    ("bert", False): ("BertForSequenceClassification", _linear("classifier", "classifier")),
}
# (rows of the body, the task models' prefix) per body
BODIES = {"electra": (lambda model: rows_for(model, "ElectraModel"), ENCODER_PREFIX),
          "albert": (lambda model: albert_rows(model, "AlbertModel"), ALBERT_PREFIX),
          "bert": (lambda model: bert_rows(model, "BertModel"), BERT_PREFIX)}


def classifier_rows(model: ModelConfig, per_token: bool) -> tuple[str, list[tuple[str, str, str]]]:
    """(HF architecture, (our path, HF name, layout) rows): the body under its task-model prefix, the head."""
    architecture, head = HEADS[model.architecture, per_token]
    body_rows, prefix = BODIES[model.architecture]
    body = [(ours, prefix + hf, layout) for ours, hf, layout in body_rows(model)
            if not (per_token and ours.startswith("pooler/"))]  # the token heads have no pooler
    return architecture, body + head


def hf_classifier_config(model: ModelConfig, architecture: str, labels: list[str]) -> dict:
    from electra_jax.hf import albert, bert
    from electra_jax.hf.export import hf_config
    configs = {"albert": albert.hf_config, "bert": bert.hf_config,
               "electra": lambda config: hf_config(config, "discriminator")}
    settings = configs[model.architecture](Config(model=model))
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
