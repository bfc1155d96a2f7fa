"""BERT to and from Hugging Face PyTorch: BertForMaskedLM out; BertForMaskedLM, BertForPreTraining (its
next-sentence head dropped) or BertModel in. The same name table (`names.bert_rows`) both ways, the
WordPiece tokenizer files beside the weights.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from electra_jax.config import Config, ModelConfig
from electra_jax.hf.names import BERT_PREFIX, bert_rows, convert, get_path

ARCHITECTURE = "BertForMaskedLM"  # what export writes
PREFIX = BERT_PREFIX
BASE = "BertModel"


# ---------------------------------------------------------------------------- export

def hf_config(config: Config) -> dict:
    m = config.model
    return {
        "architectures": [ARCHITECTURE], "model_type": "bert", "vocab_size": m.vocab_size,
        "hidden_size": m.hidden_size, "num_hidden_layers": m.num_layers, "num_attention_heads": m.num_heads,
        "intermediate_size": m.intermediate_size, "hidden_act": "gelu", "hidden_dropout_prob": m.dropout_rate,
        "attention_probs_dropout_prob": m.attention_dropout_rate, "max_position_embeddings": m.max_position_embeddings,
        "type_vocab_size": m.type_vocab_size, "initializer_range": m.initializer_range,
        "layer_norm_eps": m.layer_norm_eps, "pad_token_id": 0, "tie_word_embeddings": True,
        "position_embedding_type": "absolute", "dtype": "float32",
    }


def state_dict(model: ModelConfig, params: dict, hf_class: str = ARCHITECTURE) -> dict[str, np.ndarray]:
    return {hf: convert(get_path(params, ours), layout) for ours, hf, layout in bert_rows(model, hf_class)}


LOSSES = [("hidden-state MSE", "hidden_weight", "hidden_loss"), ("attention MSE", "attention_weight", "attention_loss"),
          ("logit KL", "logit_weight", "logit_loss"), ("MLM", "mlm_weight", "mlm_loss")]


def distillation_section(config: Config, step: int, teacher: dict, metrics: dict) -> list[str]:
    """What a distilled student's card says about its teacher, losses and training."""
    k = config.distill
    layer_map = ", ".join(f"{s}:{t}" for s, t in teacher["layer_map"])
    embeddings = "frozen (kept bit-identical to the teacher's)" if k.freeze_embeddings else "trained"
    losses = [(label, getattr(k, weight), metrics.get(key)) for label, weight, key in LOSSES if getattr(k, weight)]
    lines = ["## Distillation", "",
             f"Distilled by electra-jax (task-agnostic, as LightMBERT) from the teacher `{teacher['source']}`: the "
             f"student is its embeddings and the bottom {k.student_layers} of the teacher's {teacher['teacher_layers']} "
             f"layers, trained for {step:,} steps of batch {config.train.batch_size} x sequence length "
             f"{config.data.seq_len} to match the teacher at student:teacher layers {layer_map} (0 is the embedding "
             f"output). Embeddings were {embeddings}.",
             "", "| loss | weight | at the last logged step |", "|---|---|---|",
             *(f"| {label} | {weight:g} | {'-' if value is None else f'{value:.4f}'} |" for label, weight, value in losses),
             ""]
    if not (k.logit_weight or k.mlm_weight):
        decoder = ("" if k.freeze_embeddings else " (its decoder, the word-embedding table, was trained with the "
                   "embeddings)")
        lines += [f"No logit or MLM loss was used, so the masked-LM head is the teacher's{decoder}: fill-mask "
                  "predictions are its reading of the student's last layer. Fine-tune the encoder.", ""]
    return lines


def model_card(config: Config, step: int, num_params: int, teacher: dict | None = None,
               metrics: dict | None = None) -> str:
    m = config.model
    rows = [("layers", m.num_layers), ("hidden size", m.hidden_size), ("attention heads", m.num_heads),
            ("feed-forward size", m.intermediate_size), ("vocabulary", f"{m.vocab_size} (WordPiece)"),
            ("max positions", m.max_position_embeddings), ("parameters", f"{num_params:,}")]
    title = "# BERT (distilled)" if teacher else "# BERT"
    return "\n".join([
        title, "", f"`{ARCHITECTURE}` written by electra-jax (step {step:,} of its run). Load it as `BertModel`, "
        "`BertForTokenClassification` or `BertForSequenceClassification` to fine-tune.", "", "| | |", "|---|---|",
        *(f"| {a} | {b} |" for a, b in rows), "",
        *(distillation_section(config, step, teacher, metrics or {}) if teacher else []),
        "## Usage", "", "```python",
        "from transformers import pipeline", "", 'fill = pipeline("fill-mask", model="path/to/this/folder")',
        'print(fill("Your [MASK] here"))', "```", ""])


def base_config(model: ModelConfig) -> dict:
    return hf_config(Config(model=model))


def export(config: Config, params: dict, run_dir: Path, step: int, metrics: dict, out: Path) -> str:
    """Writes `out` as a BertForMaskedLM with the WordPiece files; returns what was written."""
    from safetensors.numpy import save_file
    from tokenizers import Tokenizer

    from electra_jax.data.text_tokenizer import tokenizer_kind
    from electra_jax.data.tokenizer import save_tokenizer
    if tokenizer_kind(run_dir / "tokenizer") != "wordpiece":
        raise ValueError(f"export: {run_dir / 'tokenizer'} is not a WordPiece tokenizer, which BERT needs")
    tensors = state_dict(config.model, params)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(hf_config(config), indent=2) + "\n")
    save_tokenizer(Tokenizer.from_file(str(run_dir / "tokenizer" / "tokenizer.json")), out, "BertTokenizer")
    from electra_jax.run_dir import TEACHER_RECORD
    record = run_dir / TEACHER_RECORD  # a distilled student's
    teacher = json.loads(record.read_text()) if record.is_file() else None
    (out / "README.md").write_text(model_card(config, step, sum(t.size for t in tensors.values()), teacher, metrics))
    return ARCHITECTURE


# ---------------------------------------------------------------------------- import

def detect_architecture(config: dict, tensors: dict) -> str:
    has_head = any(name.startswith("cls.predictions.") for name in tensors)
    has_pooler = any(".pooler." in name or name.startswith("pooler.") for name in tensors)
    if has_head:
        return "BertForPreTraining" if has_pooler else "BertForMaskedLM"
    return "BertModel"


def model_config_from_hf(hf: dict, base: ModelConfig) -> ModelConfig:
    return dataclasses.replace(
        base, architecture="bert", vocab_size=hf["vocab_size"], embedding_size=hf["hidden_size"],
        hidden_size=hf["hidden_size"], num_layers=hf["num_hidden_layers"], num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"], max_position_embeddings=hf["max_position_embeddings"],
        type_vocab_size=hf.get("type_vocab_size", 2), layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        initializer_range=hf.get("initializer_range", 0.02), dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=hf.get("attention_probs_dropout_prob", 0.1))


def config_problems(hf: dict) -> list[str]:
    problems = []
    if hf.get("hidden_act", "gelu") != "gelu":
        problems.append(f"hidden_act is {hf.get('hidden_act')!r} (only exact 'gelu' is supported)")
    if hf.get("position_embedding_type", "absolute") != "absolute":
        problems.append(f"position_embedding_type is {hf.get('position_embedding_type')!r}, not 'absolute'")
    return problems


def fresh_rows(model: ModelConfig, hf_class: str) -> list[str]:
    """Our parameters a file of `hf_class` lacks (they keep their initialisation)."""
    full = {ours for ours, _, _ in bert_rows(model, "BertForPreTraining")}
    return sorted(full - {ours for ours, _, _ in bert_rows(model, hf_class)})


def read_tokenizer(folder: Path):
    """(lowercase, strip_accents, write(tokenizer folder)) of the folder's WordPiece vocabulary."""
    from electra_jax.data.tokenizer import save_tokenizer
    from electra_jax.hf.importer import import_tokenizer
    tokenizer = import_tokenizer(folder)
    normalizer = tokenizer.normalizer
    return (bool(normalizer.lowercase), bool(normalizer.strip_accents),
            lambda out: save_tokenizer(tokenizer, out, "BertTokenizer"))
