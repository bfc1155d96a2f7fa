"""A fine-tuned token classifier as HF `ElectraForTokenClassification`, with id2label/label2id, so that
`transformers.pipeline("token-classification", model=FOLDER)` answers with our labels."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from electra_jax.config import Config
from electra_jax.hf.names import ENCODER_PREFIX, convert, get_path, rows_for

CLASSIFIER = [("classifier/kernel", "classifier.weight", "transpose"), ("classifier/bias", "classifier.bias", "same")]


def export_token_classifier(model, params: dict, labels: list[str], tokenizer_dir: Path, out: Path) -> Path:
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    from electra_jax.data.tokenizer import save_tokenizer
    from electra_jax.hf.export import hf_config
    rows = [(ours, ENCODER_PREFIX + hf, layout) for ours, hf, layout in rows_for(model.config, "ElectraModel")]
    tensors = {hf: convert(np.asarray(get_path(params, ours)), layout) for ours, hf, layout in [*rows, *CLASSIFIER]}
    out.mkdir(parents=True)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    settings = hf_config(Config(model=model.config), "discriminator")
    settings.update(architectures=["ElectraForTokenClassification"], num_labels=len(labels),
                    id2label={str(i): label for i, label in enumerate(labels)},
                    label2id={label: i for i, label in enumerate(labels)})
    (out / "config.json").write_text(json.dumps(settings, indent=2, ensure_ascii=False) + "\n")
    save_tokenizer(Tokenizer.from_file(str(Path(tokenizer_dir) / "tokenizer.json")), out)
    return out
