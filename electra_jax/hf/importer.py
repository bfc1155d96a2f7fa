"""Import published Hugging Face ELECTRA, ALBERT or BERT weights into a run directory that `pretrain`
continues (ELECTRA, ALBERT) and `finetune` (and distillation) start from.

HF_DIR is one model folder (ElectraForPreTraining, ElectraForMaskedLM or ElectraModel) or a folder with
`discriminator/` and `generator/` inside (what `export` writes). A tower that is not given starts
from a fresh initialisation. The result, OUT_DIR, holds config.yaml, tokenizer/ and checkpoints/0 (the
parameters with a fresh optimizer state); it is assembled in a temporary sibling and renamed at the end.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from electra_jax.config import Config, ModelConfig, load_config, save_config, validate
from electra_jax.hf import albert, bert
from electra_jax.hf.names import (ARCHITECTURES, BERT_DROPPED, ENCODER_PREFIX, TIED, convert, get_path, rows_for,
                                  set_path)
from electra_jax.hf.staging import refuse_nonempty, staged_folder

IGNORED = ("embeddings.position_ids",)  # buffers some older checkpoints carry
FAMILIES = {"albert": albert, "bert": bert}  # single-model formats (ELECTRA's two towers are handled apart)


class HFImportError(ValueError):
    """Bad input for `import`: one line naming what is wrong."""


# ---------------------------------------------------------------------------- reading HF folders

def read_tensors(folder: Path) -> dict[str, np.ndarray]:
    """model.safetensors (or its sharded index), else pytorch_model.bin via torch.load(weights_only=True)."""
    from safetensors.numpy import load_file
    if (folder / "model.safetensors").is_file():
        return load_file(str(folder / "model.safetensors"))
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {name: array for shard in shards for name, array in load_file(str(folder / shard)).items()}
    if (folder / "pytorch_model.bin").is_file():
        try:
            import torch
        except ImportError:
            raise HFImportError(f"import: {folder}/pytorch_model.bin needs torch to read "
                               f"(pip install torch==2.13.0), or convert it to model.safetensors") from None
        state = torch.load(folder / "pytorch_model.bin", map_location="cpu", weights_only=True)
        return {name: tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
                for name, tensor in state.items()}
    raise HFImportError(f"import: {folder} has no model.safetensors or pytorch_model.bin")


def detect_architecture(config: dict, tensors: dict) -> str:
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


def read_model_folder(folder: Path) -> tuple[dict, dict, str]:
    """(config.json contents, tensors, architecture) of one HF model folder, checked to be an ELECTRA, ALBERT or
    BERT."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise HFImportError(f"import: {config_path} not found (give a Hugging Face model folder)")
    config = json.loads(config_path.read_text())
    model_type = config.get("model_type")
    if model_type in FAMILIES:
        problems = FAMILIES[model_type].config_problems(config)
    elif model_type != "electra":
        problems = [f"model_type is {model_type!r}, not 'electra', 'albert' or 'bert'"]
    else:
        problems = bert.config_problems(config)  # ELECTRA's blocks are BERT's
    if problems:
        raise HFImportError(f"import: {config_path}: " + "; ".join(problems))
    tensors = read_tensors(folder)
    if model_type in FAMILIES:
        architecture, prefix = FAMILIES[model_type].detect_architecture(tensors), FAMILIES[model_type].PREFIX
    else:
        architecture, prefix = detect_architecture(config, tensors), ENCODER_PREFIX
    if architecture.endswith("Model"):  # some base-model checkpoints keep the task models' prefix
        tensors = {name.removeprefix(prefix): array for name, array in tensors.items()}
    return config, tensors, architecture


def model_config_from_hf(discriminator: dict | None, generator: dict | None, base: ModelConfig) -> ModelConfig:
    main = discriminator or generator
    shared = ("vocab_size", "embedding_size", "num_hidden_layers", "max_position_embeddings", "type_vocab_size")
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
                                    generator_fraction=min(1.0, generator["hidden_size"] / model.hidden_size))
    return model


# ---------------------------------------------------------------------------- weights

def _listed(what: str, items: list[str], shown: int) -> str:
    """'missing 9: a, b, c ...' (empty when there are none)."""
    return f"{what} {len(items)}: {', '.join(items[:shown])}{' ...' if len(items) > shown else ''}" if items else ""


def fill_params(params: dict, model: ModelConfig, tensors: dict, architecture: str, folder: Path) -> None:
    """Copies every tensor of one HF model into `params` through the name table; lists every problem."""
    rows = rows_for(model, architecture)
    expected = {hf for _, hf, _ in rows}
    missing = sorted(expected - tensors.keys())
    unexpected = sorted(n for n in tensors.keys() - expected
                        if not n.endswith(IGNORED) and n not in TIED and not n.startswith(BERT_DROPPED))
    mismatched = []
    for ours, hf, layout in rows:
        if hf in tensors:
            want = get_path(params, ours).shape
            got = convert(tensors[hf], layout).shape
            if got != want:
                mismatched.append(f"{hf} {tuple(tensors[hf].shape)} (expected {tuple(reversed(want)) if layout != 'same' else want})")
    problems = [_listed("missing", missing, 6), _listed("unexpected", unexpected, 6), _listed("wrong shape", mismatched, 4)]
    problems = [p for p in problems if p]
    if problems:
        raise HFImportError(f"import: {folder} does not fit an {architecture} of its config.json: " + "; ".join(problems))
    untied = [f"{name} differs from {source}" for name, source in TIED.items()
              if name in tensors and source in tensors and not np.array_equal(tensors[name], tensors[source])]
    if untied:
        raise HFImportError(f"import: {folder}: {'; '.join(untied)} (an untied output layer is not supported)")
    for ours, hf, layout in rows:
        set_path(params, ours, convert(tensors[hf], layout).astype(np.float32))


def check_shared_embeddings(model: ModelConfig, given: dict[str, tuple]) -> None:
    """ELECTRA shares the embeddings: a discriminator and a generator must agree on every such tensor."""
    names = [{ours: hf for ours, hf, _ in rows_for(model, architecture) if ours.startswith("embeddings/")}
             for _, _, _, architecture in given.values()]
    (first, _, first_tensors, _), (second, _, second_tensors, _) = given.values()
    differ = [ours for ours in names[0] if not np.array_equal(first_tensors[names[0][ours]],
                                                              second_tensors[names[1][ours]])]
    if differ:
        raise HFImportError(f"import: {first} and {second} have different {', '.join(differ)}; "
                            f"ELECTRA shares the embeddings, so they cannot form one model")


# ---------------------------------------------------------------------------- tokenizer

def import_tokenizer(folder: Path):
    """vocab.txt with tokenizer_config.json's flags (what transformers itself uses), else tokenizer.json."""
    from electra_jax.data.tokenizer import SPECIAL_TOKENS, load_tokenizer, wordpiece_from_vocab
    settings = {}
    if (folder / "tokenizer_config.json").is_file():
        settings = json.loads((folder / "tokenizer_config.json").read_text())
    if (folder / "vocab.txt").is_file():
        tokens = (folder / "vocab.txt").read_text(encoding="utf-8").split("\n")
        vocab = {token: i for i, token in enumerate(t for t in tokens if t)}
        missing = [t for t in SPECIAL_TOKENS if t not in vocab]
        if missing:
            raise HFImportError(f"import: {folder}/vocab.txt lacks the special tokens {missing}")
        lowercase = bool(settings.get("do_lower_case", True))  # BERT's defaults when unstated
        strip_accents = settings.get("strip_accents")
        return wordpiece_from_vocab(vocab, lowercase=lowercase,
                                    strip_accents=lowercase if strip_accents is None else bool(strip_accents))
    if (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder / "tokenizer.json")
    raise HFImportError(f"import: {folder} has no vocab.txt or tokenizer.json")


# ---------------------------------------------------------------------------- the command

def model_folders(source: Path, generator: Path | None) -> tuple[Path | None, Path | None, Path | None]:
    """(discriminator-side folder, generator folder, tokenizer folder)."""
    if not source.exists():
        raise FileNotFoundError(f"import: {source} does not exist")
    if (source / "discriminator" / "config.json").is_file() and not (source / "config.json").is_file():
        pair_generator = source / "generator" if (source / "generator" / "config.json").is_file() else None
        return source / "discriminator", generator or pair_generator, source / "discriminator"
    return source, generator, source


def import_hf(source: str | Path, out_dir: str | Path, generator: str | Path | None = None,
              base_config: str | Path | None = None, log=print) -> Path:
    import jax
    import jax.numpy as jnp

    from electra_jax.checkpoint import Checkpointer
    from electra_jax.data.tokenizer import save_tokenizer
    from electra_jax.train import single_device_state

    out_dir = Path(out_dir)
    refuse_nonempty(out_dir, "import")
    family = _model_type(Path(source))
    if family in FAMILIES:
        if generator:
            raise HFImportError(f"import: --generator pairs an ELECTRA generator; a {family} folder is one model")
        return import_single(Path(source), out_dir, base_config, FAMILIES[family], log)
    first_folder, generator_folder, tokenizer_folder = model_folders(Path(source), Path(generator) if generator else None)
    by_tower = {}  # tower -> (folder, config.json, tensors, architecture)
    for folder in (f for f in (first_folder, generator_folder) if f is not None):
        hf_config, tensors, architecture = read_model_folder(folder)
        if architecture not in ARCHITECTURES:
            raise HFImportError(f"import: {folder} holds a {architecture}; a discriminator/generator pair (and "
                                f"--generator) takes ELECTRA models")
        tower = ARCHITECTURES[architecture][0]
        if tower in by_tower:
            raise HFImportError(f"import: two {tower} models given ({by_tower[tower][0]} and {folder})")
        by_tower[tower] = (folder, hf_config, tensors, architecture)
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
    for tower, (folder, _, tensors, architecture) in by_tower.items():
        fill_params(params, model, tensors, architecture, folder)
        log(f"imported {architecture} from {folder}")
    if len(by_tower) == 2:  # after fill_params has checked that every tensor is there
        check_shared_embeddings(model, by_tower)
    for tower in ("discriminator", "generator"):
        if tower not in by_tower:
            log(f"the {tower} is freshly initialised (no {tower} given)")
    state = state.replace(params=jax.tree.map(jnp.asarray, params))
    with staged_folder(out_dir, "import") as staging:
        save_config(config, staging / "config.yaml")
        save_tokenizer(tokenizer, staging / "tokenizer")
        checkpointer = Checkpointer(staging / "checkpoints", dataclasses.replace(config.checkpoint, async_save=False))
        checkpointer.save(0, state)  # no data position: pretraining starts its data from the beginning
        checkpointer.close()
    log(f"wrote {out_dir} (continue with: electra-jax pretrain --config {out_dir}/config.yaml --run-dir {out_dir})")
    return out_dir



def _model_type(folder: Path) -> str | None:
    path = folder / "config.json"
    return json.loads(path.read_text()).get("model_type") if path.is_file() else None


def _single_model_tokenizer(folder: Path, family):
    """(lowercase, strip_accents, write(tokenizer folder)) of an ALBERT (SentencePiece) or BERT (WordPiece) folder."""
    if family is albert:
        from electra_jax.data.spm import save_sentencepiece
        if not (folder / "spiece.model").is_file():
            raise HFImportError(f"import: {folder} has no spiece.model (ALBERT's SentencePiece tokenizer)")
        lowercase, strip_accents = albert.tokenizer_settings(folder)
        return lowercase, strip_accents, lambda out: save_sentencepiece(
            (folder / "spiece.model").read_bytes(), out, lowercase=lowercase, strip_accents=strip_accents)
    from electra_jax.data.tokenizer import save_tokenizer
    tokenizer = import_tokenizer(folder)
    normalizer = tokenizer.normalizer
    return (bool(normalizer.lowercase), bool(normalizer.strip_accents),
            lambda out: save_tokenizer(tokenizer, out, "BertTokenizer"))


def read_single(folder: Path, config: Config, family, log=print):
    """An ALBERT (AlbertForPreTraining / AlbertForMaskedLM / AlbertModel) or BERT (BertForMaskedLM /
    BertForPreTraining / BertModel) folder -> (config with its model and tokenizer settings, a fresh state
    holding its parameters, write(tokenizer folder), the parameters the file lacks); those keep their
    initialisation (and are named). `config` gives everything but the model's shape."""
    import jax
    import jax.numpy as jnp

    from electra_jax.train import single_device_state

    hf_config, tensors, architecture = read_model_folder(folder)
    lowercase, strip_accents, write_tokenizer = _single_model_tokenizer(folder, family)
    model = family.model_config_from_hf(hf_config, config.model)
    config = dataclasses.replace(config, model=model, data=dataclasses.replace(
        config.data, vocab_size=model.vocab_size, lowercase=lowercase, strip_accents=strip_accents, tokenizer="",
        seq_len=min(config.data.seq_len, model.max_position_embeddings)))
    validate(config)
    _, make_state = single_device_state(config)
    state = jax.jit(make_state)(jax.random.key(config.train.seed))
    params = jax.tree.map(np.asarray, state.params)
    fill_params(params, model, tensors, architecture, folder)
    log(f"imported {architecture} from {folder}")
    dropped = sorted(name for name in tensors if name.startswith(BERT_DROPPED))
    if dropped:
        log(f"not kept (no such head here): {', '.join(dropped)}")
    fresh = family.fresh_rows(model, architecture)
    if fresh:
        log(f"freshly initialised (not in an {architecture}): {', '.join(fresh)}")
    return config, state.replace(params=jax.tree.map(jnp.asarray, params)), write_tokenizer, tuple(fresh)


def import_single(folder: Path, out_dir: Path, base_config: str | Path | None, family, log=print) -> Path:
    """An ALBERT or BERT folder (see `read_single`) -> a run directory."""
    from electra_jax.checkpoint import Checkpointer

    config, state, write_tokenizer, _ = read_single(folder, load_config(base_config), family, log)
    model = config.model
    with staged_folder(out_dir, "import") as staging:
        save_config(config, staging / "config.yaml")
        write_tokenizer(staging / "tokenizer")
        checkpointer = Checkpointer(staging / "checkpoints", dataclasses.replace(config.checkpoint, async_save=False))
        checkpointer.save(0, state)  # no data position: pretraining starts its data from the beginning
        checkpointer.close()
    follow = (f"fine-tune with: electra-jax finetune --init {out_dir} ..., or distil it with: electra-jax distill "
              f"--teacher {out_dir} ..." if model.architecture == "bert" else
              f"continue with: electra-jax pretrain --config {out_dir}/config.yaml --run-dir {out_dir}")
    log(f"wrote {out_dir} ({follow})")
    return out_dir
