"""ELECTRA to and from Hugging Face PyTorch: the discriminator as ElectraForPreTraining and the generator as
ElectraForMaskedLM out (each with its own embedding tables: the shared ones, or under gradient-disentangled
sharing the discriminator's E + delta); either tower, ElectraModel, or the pair in.
The name table is `names.electra_rows`, walked both ways.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from electra_jax.config import Config, ModelConfig, load_config
from electra_jax.data.tokenizer import save_tokenizer
from electra_jax.hf.importer import (HFImportError, fill_params, import_tokenizer, read_model_folder,
                                     write_imported_run)
from electra_jax.hf.names import ARCHITECTURES, ENCODER_PREFIX, convert, electra_rows, get_path, tower_sizes
from electra_jax.models.electra import set_tower_embeddings, tower_params
from electra_jax.phases import describe_steps, tokens_seen
from electra_jax.validation import validate

TOWERS = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}
PREFIX = ENCODER_PREFIX
BASE = "ElectraModel"  # the body alone: what the fine-tuning heads extend


# ---------------------------------------------------------------------------- export

def hf_config(config: Config, tower: str) -> dict:
    m = config.model
    hidden, heads, intermediate, layers = tower_sizes(m, tower)
    return {
        "architectures": [TOWERS[tower]], "model_type": "electra", "vocab_size": m.vocab_size,
        "embedding_size": m.embedding_size, "hidden_size": hidden, "num_hidden_layers": layers,
        "num_attention_heads": heads, "intermediate_size": intermediate, "hidden_act": "gelu",
        "hidden_dropout_prob": m.dropout_rate, "attention_probs_dropout_prob": m.attention_dropout_rate,
        "max_position_embeddings": m.max_position_embeddings, "type_vocab_size": m.type_vocab_size,
        "initializer_range": m.initializer_range, "layer_norm_eps": m.layer_norm_eps, "pad_token_id": 0,
        "tie_word_embeddings": True, "summary_type": "first", "summary_use_proj": True,
        "summary_activation": "gelu", "summary_last_dropout": 0.1, "position_embedding_type": "absolute",
        "dtype": "float32",
    }


def state_dict(config: Config, params: dict, hf_class: str) -> dict[str, np.ndarray]:
    """The HF tensors of one tower: its own embedding tables (E + delta folded in for the discriminator under
    objective.embedding_sharing=gdes) and its body and head."""
    view = tower_params(params, config.objective.embedding_sharing, ARCHITECTURES[hf_class][0])
    return {hf: convert(np.asarray(get_path(view, ours)), layout)
            for ours, hf, layout in electra_rows(config.model, hf_class)}


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


def model_card(config: Config, tower: str, step: int, num_params: int, metrics: dict, tokenizer: dict) -> str:
    m, hf_class = config.model, TOWERS[tower]
    hidden, heads, intermediate, layers = tower_sizes(m, tower)
    tokens = tokens_seen(config, step)
    sharing = {"full": "one table for both towers (google-research/electra)",
               "gdes": ("gradient-disentangled (DeBERTaV3): the generator's tables plus the discriminator's own delta, "
                        "folded in" if tower == "discriminator" else "gradient-disentangled (DeBERTaV3): trained by "
                        "this generator's loss only; the discriminator adds its own delta"),
               "none": "its own tables (none shared)"}[config.objective.embedding_sharing]
    rows = [("layers", layers), ("hidden size", hidden), ("attention heads", heads),
            ("feed-forward size", intermediate), ("embedding size", m.embedding_size),
            ("vocabulary", m.vocab_size), ("max positions", m.max_position_embeddings),
            ("parameters", f"{num_params:,}"), ("embeddings", sharing),
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
    lines = [f"# ELECTRA {tower}", "", f"`{hf_class}`: {role}. Pretrained with electra-jax.", "",
             "| | |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows), "",
             f"Pretraining: {describe_steps(config, step)} ({tokens:,} token positions seen), generator {m.generator_hidden_size} "
             f"hidden ({m.generator_num_heads} heads, {m.generator_num_layers} layers), masking "
             f"{config.objective.mask_prob:.0%}{' of whole words' if config.objective.whole_word_masking else ''}.",
             ""]
    if metric_rows:
        lines += [f"Pretraining metrics at step {metrics.get('step', step):,}:", "", "| metric | value |",
                  "|---|---|", *(f"| {a} | {b} |" for a, b in metric_rows), ""]
    lines += ["## Usage", "", "```python", snippet.replace("PATH", '"path/to/this/folder"'), "```", ""]
    return "\n".join(lines)

def export(config: Config, params: dict, run_dir: Path, step: int, metrics: dict, out: Path) -> str:
    """Writes out/discriminator and out/generator; returns what was written."""
    for tower in TOWERS:
        folder = out / tower
        num_params = write_model_files(folder, config, params, tower)
        tokenizer = write_tokenizer_files(run_dir, folder)
        (folder / "README.md").write_text(model_card(config, tower, step, num_params, metrics, tokenizer))
    return "discriminator/ (ElectraForPreTraining) and generator/ (ElectraForMaskedLM)"


def base_config(model: ModelConfig) -> dict:
    """config.json of the discriminator's body (what fine-tuned classifiers extend)."""
    return hf_config(Config(model=model), "discriminator")


# ---------------------------------------------------------------------------- import

def detect_architecture(config: dict, tensors: dict) -> str:
    """Which ELECTRA class a folder holds: by its head's tensors, else its declared (base) class."""
    if any(name.startswith("discriminator_predictions.") for name in tensors):
        return "ElectraForPreTraining"
    if any(name.startswith("generator_predictions.") for name in tensors):
        return "ElectraForMaskedLM"
    declared = (config.get("architectures") or ["ElectraModel"])[0]
    if declared not in ("ElectraModel", "ElectraForPreTraining", "ElectraForMaskedLM") and any(
            n.startswith(ENCODER_PREFIX) for n in tensors):
        raise HFImportError(f"import: architecture {declared} is not supported "
                           f"(use ElectraForPreTraining, ElectraForMaskedLM or ElectraModel)")
    return "ElectraModel"


def model_config_from_hf(discriminator: dict | None, generator: dict | None, base: ModelConfig) -> ModelConfig:
    main = discriminator or generator
    shared = ("vocab_size", "embedding_size", "max_position_embeddings", "type_vocab_size")
    if discriminator and generator:
        differ = [f"{k} ({discriminator.get(k)} vs {generator.get(k)})" for k in shared
                  if discriminator.get(k) != generator.get(k)]
        if differ:
            raise HFImportError("import: discriminator and generator configs disagree on " + ", ".join(differ))
    model = dataclasses.replace(
        base, vocab_size=main["vocab_size"], embedding_size=main.get("embedding_size", main["hidden_size"]),
        num_layers=main["num_hidden_layers"], max_position_embeddings=main["max_position_embeddings"],
        type_vocab_size=main.get("type_vocab_size", 2), layer_norm_eps=main.get("layer_norm_eps", 1e-12),
        initializer_range=main.get("initializer_range", 0.02),
        dropout_rate=main.get("hidden_dropout_prob", 0.1),
        attention_dropout_rate=main.get("attention_probs_dropout_prob", 0.1))
    if discriminator:
        model = dataclasses.replace(model, hidden_size=discriminator["hidden_size"],
                                    num_heads=discriminator["num_attention_heads"],
                                    intermediate_size=discriminator["intermediate_size"])
    if generator:
        model = dataclasses.replace(model, generator_hidden=generator["hidden_size"],
                                    generator_heads=generator["num_attention_heads"],
                                    generator_intermediate=generator["intermediate_size"],
                                    generator_fraction=min(1.0, generator["hidden_size"] / model.hidden_size),
                                    generator_layers=0 if generator["num_hidden_layers"] == model.num_layers
                                    else generator["num_hidden_layers"])
    return model


def check_shared_embeddings(model: ModelConfig, given: dict[str, tuple]) -> None:
    """ELECTRA shares the embeddings: a discriminator and a generator must agree on every such tensor."""
    names = [{ours: hf for ours, hf, _ in electra_rows(model, hf_class) if ours.startswith("embeddings/")}
             for _, _, _, hf_class in given.values()]
    (first, _, first_tensors, _), (second, _, second_tensors, _) = given.values()
    differ = [ours for ours in names[0] if not np.array_equal(first_tensors[names[0][ours]],
                                                              second_tensors[names[1][ours]])]
    if differ:
        raise HFImportError(f"import: {first} and {second} have different {', '.join(differ)}; with "
                            f"objective.embedding_sharing=full the towers share them: import the pair with "
                            f"a --config whose objective.embedding_sharing is gdes or none")


def model_folders(source: Path, generator: Path | None) -> tuple[Path | None, Path | None, Path | None]:
    """(discriminator-side folder, generator folder, tokenizer folder)."""
    if not source.exists():
        raise FileNotFoundError(f"import: {source} does not exist")
    if (source / "discriminator" / "config.json").is_file() and not (source / "config.json").is_file():
        pair_generator = source / "generator" if (source / "generator" / "config.json").is_file() else None
        return source / "discriminator", generator or pair_generator, source / "discriminator"
    return source, generator, source


def import_pair(source: Path, out_dir: Path, generator: Path | None, base_config: str | Path | None,
                log=print) -> Path:
    """An ELECTRA folder (a discriminator, a generator or a base model; or `export`'s discriminator/ and
    generator/ pair), with `--generator` the other tower, -> a run directory. A tower not given keeps its
    fresh initialisation."""
    import jax
    import jax.numpy as jnp

    from electra_jax.state import single_device_state

    first_folder, generator_folder, tokenizer_folder = model_folders(Path(source), Path(generator) if generator else None)
    by_tower = {}  # tower -> (folder, config.json, tensors, HF class)
    for folder in (f for f in (first_folder, generator_folder) if f is not None):
        hf_config, tensors, hf_class = read_model_folder(folder)
        if hf_class not in ARCHITECTURES:
            raise HFImportError(f"import: {folder} holds a {hf_class}; a discriminator/generator pair (and "
                                f"--generator) takes ELECTRA models")
        tower = ARCHITECTURES[hf_class][0]
        if tower in by_tower:
            raise HFImportError(f"import: two {tower} models given ({by_tower[tower][0]} and {folder})")
        by_tower[tower] = (folder, hf_config, tensors, hf_class)
    config = load_config(base_config)
    hf_configs = {tower: entry[1] for tower, entry in by_tower.items()}
    model = model_config_from_hf(hf_configs.get("discriminator"), hf_configs.get("generator"), config.model)
    tokenizer = import_tokenizer(tokenizer_folder)
    if tokenizer.get_vocab_size() > model.vocab_size:
        raise HFImportError(f"import: the tokenizer has {tokenizer.get_vocab_size()} tokens but the model's "
                           f"vocab_size is {model.vocab_size}")
    normalizer = tokenizer.normalizer
    config = dataclasses.replace(config, model=model, data=dataclasses.replace(
        config.data, vocab_size=tokenizer.get_vocab_size(), lowercase=bool(normalizer.lowercase),
        strip_accents=bool(normalizer.strip_accents), tokenizer="",
        seq_len=min(config.data.seq_len, model.max_position_embeddings)))
    validate(config)

    # A fresh state first: a tower that is not imported keeps its initialisation. The optimizer state
    # (zero moments, step 0) does not depend on the parameter values.
    _, make_state = single_device_state(config)
    state = jax.jit(make_state)(jax.random.key(config.train.seed))
    params = jax.tree.map(np.asarray, state.params)
    sharing = config.objective.embedding_sharing
    # The generator first: under gdes the discriminator's tables are stored as their delta from its E.
    for tower in sorted(by_tower, key=lambda t: t != "generator"):
        folder, _, tensors, hf_class = by_tower[tower]
        view = tower_params(params, sharing, tower)
        view["embeddings"] = jax.tree.map(np.copy, view["embeddings"])
        fill_params(view, electra_rows(model, hf_class), tensors, hf_class, folder)
        params.update({name: value for name, value in view.items() if name != "embeddings"})  # top-level leaves
        set_tower_embeddings(params, sharing, tower, view["embeddings"])
        log(f"imported {hf_class} from {folder}")
    if len(by_tower) == 2 and sharing == "full":  # after fill_params has checked that every tensor is there
        check_shared_embeddings(model, by_tower)
    for tower in ("discriminator", "generator"):
        if tower not in by_tower:
            log(f"the {tower} is freshly initialised (no {tower} given)")
    state = state.replace(params=jax.tree.map(jnp.asarray, params))
    write_imported_run(out_dir, config, lambda folder: save_tokenizer(tokenizer, folder), state)
    log(f"wrote {out_dir} (continue with: electra-jax pretrain --config {out_dir}/config.yaml --run-dir {out_dir})")
    return out_dir
