"""ALBERT to and from Hugging Face PyTorch: AlbertForPreTraining out; AlbertForPreTraining,
AlbertForMaskedLM or AlbertModel in. The same name table (`names.albert_rows`) in both directions, the
SentencePiece tokenizer files beside the weights, and the checks of the ELECTRA path: one-line errors
naming every problem, nothing written unless everything fits.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from electra_jax.config import Config, ModelConfig
from electra_jax.hf.names import ALBERT_PREFIX, albert_rows, convert, get_path
from electra_jax.phases import describe_steps, tokens_seen

ARCHITECTURE = "AlbertForPreTraining"  # what export writes: the MLM and SOP heads, loadable as AlbertForMaskedLM
PREFIX = ALBERT_PREFIX
BASE = "AlbertModel"


# ---------------------------------------------------------------------------- export

def hf_config(config: Config) -> dict:
    m = config.model
    return {
        "architectures": [ARCHITECTURE], "model_type": "albert", "vocab_size": m.vocab_size,
        "embedding_size": m.embedding_size, "hidden_size": m.hidden_size, "num_hidden_layers": m.num_layers,
        "num_hidden_groups": m.num_hidden_groups, "inner_group_num": m.inner_group_num,
        "num_attention_heads": m.num_heads, "intermediate_size": m.intermediate_size, "hidden_act": "gelu_new",
        "hidden_dropout_prob": m.dropout_rate, "attention_probs_dropout_prob": m.attention_dropout_rate,
        "classifier_dropout_prob": m.dropout_rate, "max_position_embeddings": m.max_position_embeddings,
        "type_vocab_size": m.type_vocab_size, "initializer_range": m.initializer_range,
        "layer_norm_eps": m.layer_norm_eps, "pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3,
        "tie_word_embeddings": True, "position_embedding_type": "absolute", "dtype": "float32",
    }


def state_dict(model: ModelConfig, params: dict, hf_class: str = ARCHITECTURE) -> dict[str, np.ndarray]:
    return {hf: convert(get_path(params, ours), layout) for ours, hf, layout in albert_rows(model, hf_class)}


def model_card(config: Config, step: int, num_params: int, metrics: dict) -> str:
    m = config.model
    tokens = tokens_seen(config, step)
    rows = [("layers", f"{m.num_layers} ({m.num_hidden_groups} group(s) of {m.inner_group_num} shared layer(s))"),
            ("hidden size", m.hidden_size), ("attention heads", m.num_heads), ("feed-forward size", m.intermediate_size),
            ("embedding size", m.embedding_size), ("vocabulary", f"{m.vocab_size} (SentencePiece)"),
            ("max positions", m.max_position_embeddings), ("parameters", f"{num_params:,}")]
    shown = [("MLM loss", "mlm_loss"), ("MLM accuracy", "mlm_accuracy"), ("SOP loss", "sop_loss"),
             ("SOP accuracy", "sop_accuracy")]
    metric_rows = [(label, f"{metrics[key]:.4f}") for label, key in shown if key in metrics]
    lines = ["# ALBERT", "", f"`{ARCHITECTURE}` (masked-language model + sentence-order prediction), pretrained "
             "with electra-jax. Load it as `AlbertModel` or `AlbertForSequenceClassification` / "
             "`AlbertForTokenClassification` to fine-tune.", "", "| | |", "|---|---|",
             *(f"| {a} | {b} |" for a, b in rows), "",
             f"Pretraining: {describe_steps(config, step)} ({tokens:,} token positions seen), whole-word n-gram masking (n <= {config.objective.max_ngram}) "
             f"of {config.objective.mask_prob:.0%}.", ""]
    if metric_rows:
        lines += [f"Pretraining metrics at step {metrics.get('step', step):,}:", "", "| metric | value |", "|---|---|",
                  *(f"| {a} | {b} |" for a, b in metric_rows), ""]
    lines += ["## Usage", "", "```python", "from transformers import AlbertForMaskedLM, AutoTokenizer", "",
              'model = AlbertForMaskedLM.from_pretrained("path/to/this/folder")',
              'tokenizer = AutoTokenizer.from_pretrained("path/to/this/folder")', "```", ""]
    return "\n".join(lines)


def base_config(model: ModelConfig) -> dict:
    return hf_config(Config(model=model))


def export(config: Config, params: dict, run_dir: Path, step: int, metrics: dict, out: Path) -> str:
    """Writes `out` as an AlbertForPreTraining with the SentencePiece files; returns what was written."""
    from safetensors.numpy import save_file

    from electra_jax.data.text_tokenizer import copy_tokenizer, tokenizer_kind
    if tokenizer_kind(run_dir / "tokenizer") != "sentencepiece":
        raise ValueError(f"export: {run_dir / 'tokenizer'} is not a SentencePiece tokenizer, which transformers' "
                         f"ALBERT tokenizer needs")
    tensors = state_dict(config.model, params)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(config), indent=2) + "\n")
    copy_tokenizer(run_dir / "tokenizer", out)
    (out / "README.md").write_text(model_card(config, step, sum(t.size for t in tensors.values()), metrics))
    return ARCHITECTURE


# ---------------------------------------------------------------------------- import

def detect_architecture(config: dict, tensors: dict) -> str:
    if any(name.startswith("sop_classifier.") for name in tensors):
        return "AlbertForPreTraining"
    if any(name.startswith("predictions.") for name in tensors):
        return "AlbertForMaskedLM"
    return "AlbertModel"


def model_config_from_hf(hf: dict, base: ModelConfig) -> ModelConfig:
    return dataclasses.replace(
        base, architecture="albert", vocab_size=hf["vocab_size"], embedding_size=hf.get("embedding_size", 128),
        hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"],
        num_hidden_groups=hf.get("num_hidden_groups", 1), inner_group_num=hf.get("inner_group_num", 1),
        num_heads=hf["num_attention_heads"], intermediate_size=hf["intermediate_size"],
        max_position_embeddings=hf["max_position_embeddings"], type_vocab_size=hf.get("type_vocab_size", 2),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12), initializer_range=hf.get("initializer_range", 0.02),
        dropout_rate=hf.get("hidden_dropout_prob", 0.0), attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.0))


def config_problems(hf: dict) -> list[str]:
    problems = []
    if hf.get("hidden_act", "gelu_new") != "gelu_new":
        problems.append(f"hidden_act is {hf.get('hidden_act')!r} (ALBERT's 'gelu_new' is supported)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type is {hf.get('position_embedding_type')!r}, not 'absolute'")
    return problems


def read_tokenizer(folder: Path):
    """(lowercase, strip_accents, write(tokenizer folder)) of the folder's spiece.model, the flags as
    transformers would apply them (AlbertTokenizer's defaults when tokenizer_config.json does not say)."""
    from electra_jax.data.spm import save_sentencepiece
    from electra_jax.hf.importer import HFImportError
    if not (folder / "spiece.model").is_file():
        raise HFImportError(f"import: {folder} has no spiece.model (ALBERT's SentencePiece tokenizer)")
    settings = {}
    if (folder / "tokenizer_config.json").is_file():
        settings = json.loads((folder / "tokenizer_config.json").read_text())
    lowercase, strip_accents = bool(settings.get("do_lower_case", True)), not bool(settings.get("keep_accents", False))
    return lowercase, strip_accents, lambda out: save_sentencepiece(
        (folder / "spiece.model").read_bytes(), out, lowercase=lowercase, strip_accents=strip_accents)


def fresh_rows(model: ModelConfig, hf_class: str) -> list[str]:
    """Our parameters a file of `hf_class` lacks (they keep their initialisation)."""
    full = {ours for ours, _, _ in albert_rows(model, ARCHITECTURE)}
    return sorted(full - {ours for ours, _, _ in albert_rows(model, hf_class)})

