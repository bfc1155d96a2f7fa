"""Export a run's checkpoint as two Hugging Face PyTorch model directories (no torch needed).

OUT_DIR/discriminator is an ElectraForPreTraining, OUT_DIR/generator an ElectraForMaskedLM; both carry
the shared embeddings, config.json, model.safetensors, the tokenizer files and a model card. Everything
is written into a temporary sibling folder that is renamed to OUT_DIR only once complete.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from electra_jax.config import Config, load_config
from electra_jax.data.tokenizer import save_tokenizer
from electra_jax.hf.names import convert, get_path, rows_for, tower_sizes
from electra_jax.hf.staging import refuse_nonempty, staged_folder

TOWERS = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}


# ---------------------------------------------------------------------------- reading a run

def locate_checkpoint(source: str | Path, step: int | None) -> tuple[Path, int | None]:
    """RUN_DIR, RUN_DIR/checkpoints or RUN_DIR/checkpoints/STEP -> (run dir, requested step or None)."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"export: {path} does not exist (give a run directory or one of its checkpoints)")
    if path.name.isdigit() and path.parent.name == "checkpoints":
        if step is not None and step != int(path.name):
            raise ValueError(f"export: --step {step} contradicts the checkpoint folder {path}")
        return path.parent.parent, int(path.name)
    if path.name == "checkpoints":
        path = path.parent
    if not (path / "config.yaml").is_file() or not (path / "checkpoints").is_dir():
        raise FileNotFoundError(f"export: {path} is not a run directory (no config.yaml and checkpoints/ in it)")
    return path, step


def load_run_params(run_dir: Path, step: int | None) -> tuple[Config, dict, int]:
    """The run's config and the parameters of `step` (default: the newest finished checkpoint)."""
    import jax

    from electra_jax.checkpoint import Checkpointer
    from electra_jax.train import single_device_state

    config = load_config(run_dir / "config.yaml")
    abstract, _ = single_device_state(config)
    checkpointer = Checkpointer(run_dir / "checkpoints", config.checkpoint, read_only=True)
    try:
        steps = checkpointer.all_steps()  # finished checkpoints only: a save in flight is not listed
        if not steps:
            raise FileNotFoundError(f"export: {run_dir / 'checkpoints'} holds no finished checkpoint yet")
        if step is None:
            step = steps[-1]
        elif step not in steps:
            raise ValueError(f"export: no checkpoint for step {step} in {run_dir / 'checkpoints'} "
                             f"(there are: {', '.join(map(str, steps))})")
        params = checkpointer.restore_params(step, abstract.params)
    finally:
        checkpointer.close()
    return config, jax.tree.map(np.asarray, params), step


# ---------------------------------------------------------------------------- HF files

def hf_config(config: Config, tower: str) -> dict:
    m = config.model
    hidden, heads, intermediate = tower_sizes(m, tower)
    return {
        "architectures": [TOWERS[tower]], "model_type": "electra", "vocab_size": m.vocab_size,
        "embedding_size": m.embedding_size, "hidden_size": hidden, "num_hidden_layers": m.num_layers,
        "num_attention_heads": heads, "intermediate_size": intermediate, "hidden_act": "gelu",
        "hidden_dropout_prob": m.dropout_rate, "attention_probs_dropout_prob": m.attention_dropout_rate,
        "max_position_embeddings": m.max_position_embeddings, "type_vocab_size": m.type_vocab_size,
        "initializer_range": m.initializer_range, "layer_norm_eps": m.layer_norm_eps, "pad_token_id": 0,
        "tie_word_embeddings": True, "summary_type": "first", "summary_use_proj": True,
        "summary_activation": "gelu", "summary_last_dropout": 0.1, "position_embedding_type": "absolute",
        "dtype": "float32",
    }


def state_dict(config: Config, params: dict, architecture: str) -> dict[str, np.ndarray]:
    return {hf: convert(get_path(params, ours), layout) for ours, hf, layout in rows_for(config.model, architecture)}


def write_model_files(folder: Path, config: Config, params: dict, tower: str) -> int:
    """config.json and model.safetensors of one tower; returns its parameter count."""
    from safetensors.numpy import save_file
    folder.mkdir(parents=True, exist_ok=True)
    tensors = state_dict(config, params, TOWERS[tower])
    save_file(tensors, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(hf_config(config, tower), indent=2) + "\n")
    return sum(t.size for t in tensors.values())


def write_tokenizer_files(run_dir: Path, out: Path) -> dict:
    """The run's tokenizer, with every normalisation choice stated for transformers."""
    from tokenizers import Tokenizer
    tokenizer_json = run_dir / "tokenizer" / "tokenizer.json"
    if not tokenizer_json.is_file():
        raise FileNotFoundError(f"export: {tokenizer_json} is missing; the run directory is incomplete")
    return save_tokenizer(Tokenizer.from_file(str(tokenizer_json)), out)


def _last_metrics(run_dir: Path, step: int) -> dict:
    path, last = run_dir / "metrics.jsonl", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("step", 0) <= step:
                last = row
    return last


def model_card(config: Config, tower: str, step: int, num_params: int, metrics: dict, tokenizer: dict) -> str:
    m, architecture = config.model, TOWERS[tower]
    hidden, heads, intermediate = tower_sizes(m, tower)
    tokens = step * config.train.batch_size * config.data.seq_len
    rows = [("layers", m.num_layers), ("hidden size", hidden), ("attention heads", heads),
            ("feed-forward size", intermediate), ("embedding size", m.embedding_size),
            ("vocabulary", m.vocab_size), ("max positions", m.max_position_embeddings),
            ("parameters", f"{num_params:,}"),
            ("tokenizer", f"WordPiece, lowercase={tokenizer['lowercase']}, strip_accents={tokenizer['strip_accents']}")]
    shown = [("generator loss", "generator_loss"), ("generator accuracy", "generator_accuracy"),
             ("discriminator loss", "discriminator_loss"), ("discriminator accuracy", "discriminator_accuracy"),
             ("replaced-token F1", "replaced_f1")]
    metric_rows = [(label, f"{metrics[key]:.4f}") for label, key in shown if key in metrics]
    if tower == "discriminator":
        role = "the ELECTRA discriminator (replaced-token detection): the model to fine-tune"
        snippet = ("from transformers import ElectraForPreTraining, ElectraTokenizerFast\n\n"
                   "model = ElectraForPreTraining.from_pretrained(PATH)\n"
                   "tokenizer = ElectraTokenizerFast.from_pretrained(PATH)\n"
                   "inputs = tokenizer(\"Your sentence here\", return_tensors=\"pt\")\n"
                   "logits = model(**inputs).logits  # > 0: the token looks replaced")
    else:
        role = "the ELECTRA generator (masked-language model) trained alongside the discriminator"
        snippet = ("from transformers import pipeline\n\n"
                   "fill = pipeline(\"fill-mask\", model=PATH)\n"
                   "print(fill(\"Your [MASK] here\"))")
    lines = [f"# ELECTRA {tower}", "", f"`{architecture}`: {role}. Pretrained with electra-jax.", "",
             "| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), "",
             f"Pretraining: {step:,} steps of batch {config.train.batch_size} x sequence length "
             f"{config.data.seq_len} ({tokens:,} token positions seen), generator {m.generator_hidden_size} "
             f"hidden ({m.generator_num_heads} heads), masking {config.objective.mask_prob:.0%}.", ""]
    if metric_rows:
        lines += [f"Pretraining metrics at step {metrics.get('step', step):,}:", "", "| metric | value |",
                  "|---|---|", *(f"| {a} | {b} |" for a, b in metric_rows), ""]
    lines += ["## Usage", "", "```python", snippet.replace("PATH", '"path/to/this/folder"'), "```", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------- the command

def export(source: str | Path, out_dir: str | Path, step: int | None = None, log=print) -> Path:
    out_dir = Path(out_dir)
    refuse_nonempty(out_dir, "export")
    run_dir, step = locate_checkpoint(source, step)
    config, params, step = load_run_params(run_dir, step)
    metrics = _last_metrics(run_dir, step)
    if config.model.architecture == "albert":
        from electra_jax.hf.albert import export_albert
        with staged_folder(out_dir, "export") as staging:
            export_albert(config, params, run_dir, step, metrics, staging)
        log(f"exported step {step} of {run_dir} to {out_dir} (AlbertForPreTraining)")
        return out_dir
    if config.model.architecture == "bert":
        from electra_jax.hf.bert import export_bert
        with staged_folder(out_dir, "export") as staging:
            export_bert(config, params, run_dir, step, staging, metrics)
        log(f"exported step {step} of {run_dir} to {out_dir} (BertForMaskedLM)")
        return out_dir
    with staged_folder(out_dir, "export") as staging:
        for tower in TOWERS:
            folder = staging / tower
            num_params = write_model_files(folder, config, params, tower)
            tokenizer = write_tokenizer_files(run_dir, folder)
            (folder / "README.md").write_text(model_card(config, tower, step, num_params, metrics, tokenizer))
    log(f"exported step {step} of {run_dir} to {out_dir}/discriminator and {out_dir}/generator")
    return out_dir

