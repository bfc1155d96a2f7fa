"""Import published Hugging Face ELECTRA, ALBERT or BERT weights into a run directory that `pretrain`
continues (ELECTRA, ALBERT) and `finetune` (and distillation) start from.

HF_DIR's config.json names the family (`model_type`); the family's importer reads it (ELECTRA's takes a
discriminator/generator pair, see `hf/electra.py`; ALBERT and BERT are one model, `import_single`). The
result, OUT_DIR, holds config.yaml, tokenizer/ and checkpoints/0 (the parameters with a fresh optimizer
state); it is assembled in a temporary sibling and renamed at the end.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from electra_jax.config import Config, load_config, save_config
from electra_jax.hf.names import BERT_DROPPED, TIED, convert, get_path, set_path
from electra_jax.storage import refuse_nonempty, staged_folder
from electra_jax.validation import validate

IGNORED = ("embeddings.position_ids",)  # buffers some older checkpoints carry


class HFImportError(ValueError):
    """Bad input for `import`: one line naming what is wrong."""


# ---------------------------------------------------------------------------- reading HF folders

def read_tensors(folder: Path) -> dict[str, np.ndarray]:
    """model.safetensors (or its sharded index), else pytorch_model.bin via torch.load(weights_only=True)."""
    if (folder / "model.safetensors").is_file():
        return _safetensors(folder / "model.safetensors")
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return {name: array for shard in shards for name, array in _safetensors(folder / shard).items()}
    if (folder / "pytorch_model.bin").is_file():
        return _pickled(folder / "pytorch_model.bin")
    raise HFImportError(f"import: {folder} has no model.safetensors or pytorch_model.bin")


def _safetensors(path: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file
    try:
        return load_file(str(path))
    except SafetensorError as err:  # a truncated download, most often
        raise HFImportError(f"import: {path} is damaged or incomplete ({err}); download or export it again") from None


def _pickled(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError:
        raise HFImportError(f"import: {path} needs torch to read (pip install torch==2.13.0), or convert it to "
                            f"model.safetensors") from None
    import pickle
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # weights_only refuses every object that is not a tensor or a container
        raise HFImportError(f"import: {path} holds Python objects other than tensors, and loading them could run "
                            f"code, so it is refused; get the weights as model.safetensors from a trusted "
                            f"source") from None
    except (RuntimeError, EOFError) as err:  # torch's words for a cut or corrupt zip archive
        raise HFImportError(f"import: {path} is damaged or incomplete ({str(err).splitlines()[0]}); download "
                            f"it again") from None
    return {name: tensor.float().numpy() if tensor.is_floating_point() else tensor.numpy()
            for name, tensor in state.items()}


def hf_family(config: dict, where: Path):
    """The family whose `hf.model_type` is config.json's, or a one-line error naming the known ones."""
    from electra_jax.families import FAMILIES
    model_type = config.get("model_type")
    for family in FAMILIES.values():
        if family.hf.model_type == model_type:
            return family
    known = ", ".join(repr(f.hf.model_type) for f in FAMILIES.values())
    raise HFImportError(f"import: {where}: model_type is {model_type!r}, not one of {known}")


def read_model_folder(folder: Path) -> tuple[dict, dict, str]:
    """(config.json contents, tensors, HF class name) of one HF model folder of a known family."""
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise HFImportError(f"import: {config_path} not found (give a Hugging Face model folder)")
    config = json.loads(config_path.read_text())
    family = hf_family(config, config_path)
    problems = family.hf.config_problems(config)
    if problems:
        raise HFImportError(f"import: {config_path}: " + "; ".join(problems))
    tensors = read_tensors(folder)
    hf_class = family.hf.detect(config, tensors)
    if hf_class == family.hf.base:  # some base-model checkpoints keep the task models' prefix
        tensors = {name.removeprefix(family.hf.prefix): array for name, array in tensors.items()}
    return config, tensors, hf_class


# ---------------------------------------------------------------------------- weights

def _listed(what: str, items: list[str], shown: int) -> str:
    """'missing 9: a, b, c ...' (empty when there are none)."""
    return f"{what} {len(items)}: {', '.join(items[:shown])}{' ...' if len(items) > shown else ''}" if items else ""


def fill_params(params: dict, rows: list[tuple[str, str, str]], tensors: dict, hf_class: str,
                folder: Path) -> None:
    """Copies every tensor of one HF model into `params` through its name-table rows; lists every problem."""
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
        raise HFImportError(f"import: {folder} does not fit an {hf_class} of its config.json: " + "; ".join(problems))
    untied = [f"{name} differs from {source}" for name, source in TIED.items()
              if name in tensors and source in tensors and not np.array_equal(tensors[name], tensors[source])]
    if untied:
        raise HFImportError(f"import: {folder}: {'; '.join(untied)} (an untied output layer is not supported)")
    for ours, hf, layout in rows:
        set_path(params, ours, convert(tensors[hf], layout).astype(np.float32))


# ---------------------------------------------------------------------------- tokenizer

def read_vocab(path: Path) -> dict[str, int]:
    """A vocab.txt (one token a line, the id its line), which must hold BERT's special tokens."""
    from electra_jax.data.tokenizer import SPECIAL_TOKENS
    tokens = path.read_text(encoding="utf-8").split("\n")
    vocab = {token: i for i, token in enumerate(t for t in tokens if t)}
    missing = [t for t in SPECIAL_TOKENS if t not in vocab]
    if missing:
        raise HFImportError(f"import: {path} lacks the special tokens {missing}")
    return vocab


def import_tokenizer(folder: Path):
    """vocab.txt with tokenizer_config.json's flags (what transformers itself uses), else tokenizer.json."""
    from electra_jax.data.tokenizer import load_tokenizer, wordpiece_from_vocab
    settings = {}
    if (folder / "tokenizer_config.json").is_file():
        settings = json.loads((folder / "tokenizer_config.json").read_text())
    if (folder / "vocab.txt").is_file():
        vocab = read_vocab(folder / "vocab.txt")
        lowercase = bool(settings.get("do_lower_case", True))  # BERT's defaults when unstated
        strip_accents = settings.get("strip_accents")
        return wordpiece_from_vocab(vocab, lowercase=lowercase,
                                    strip_accents=lowercase if strip_accents is None else bool(strip_accents))
    if (folder / "tokenizer.json").is_file():
        return load_tokenizer(folder / "tokenizer.json")
    raise HFImportError(f"import: {folder} has no vocab.txt or tokenizer.json")


# ---------------------------------------------------------------------------- the command

def import_hf(source: str | Path, out_dir: str | Path, generator: str | Path | None = None,
              base_config: str | Path | None = None, log=print) -> Path:
    """HF_DIR (and an ELECTRA `--generator`) -> a run directory, by the family's own importer."""
    source, out_dir = Path(source), Path(out_dir)
    refuse_nonempty(out_dir, "import")
    if not source.exists():
        raise FileNotFoundError(f"import: {source} does not exist")
    from electra_jax.families import FAMILIES
    if (source / "config.json").is_file():
        family = hf_family(json.loads((source / "config.json").read_text()), source / "config.json")
    else:  # an export of a family that writes several model folders (ELECTRA's towers)
        family = next((f for f in FAMILIES.values() if f.hf.subfolders
                       and (source / f.hf.subfolders[0] / "config.json").is_file()), None)
        if family is None:
            raise HFImportError(f"import: {source / 'config.json'} not found (give a Hugging Face model folder)")
    return family.hf.import_run(source, out_dir, Path(generator) if generator else None, base_config, log)


def read_single(folder: Path, config: Config, family, log=print):
    """A one-model folder (ALBERT: AlbertForPreTraining / AlbertForMaskedLM / AlbertModel; BERT:
    BertForMaskedLM / BertForPreTraining / BertModel) -> (config with its model and tokenizer settings, a fresh
    state holding its parameters, write(tokenizer folder), the parameters the file lacks); those keep their
    initialisation (and are named). `config` gives everything but the model's shape."""
    import jax
    import jax.numpy as jnp

    from electra_jax.state import single_device_state

    hf_config, tensors, hf_class = read_model_folder(folder)
    lowercase, strip_accents, write_tokenizer = family.hf.read_tokenizer(folder)
    model = family.hf.from_hf_config(hf_config, config.model)
    config = dataclasses.replace(config, model=model, data=dataclasses.replace(
        config.data, vocab_size=model.vocab_size, lowercase=lowercase, strip_accents=strip_accents, tokenizer="",
        seq_len=min(config.data.seq_len, model.max_position_embeddings)))
    validate(config)
    _, make_state = single_device_state(config)
    state = jax.jit(make_state)(jax.random.key(config.train.seed))
    params = jax.tree.map(np.asarray, state.params)
    fill_params(params, family.hf.rows(model, hf_class), tensors, hf_class, folder)
    log(f"imported {hf_class} from {folder}")
    dropped = sorted(name for name in tensors if name.startswith(BERT_DROPPED))
    if dropped:
        log(f"not kept (no such head here): {', '.join(dropped)}")
    fresh = family.hf.fresh_rows(model, hf_class)
    if fresh:
        log(f"freshly initialised (not in an {hf_class}): {', '.join(fresh)}")
    return config, state.replace(params=jax.tree.map(jnp.asarray, params)), write_tokenizer, tuple(fresh)


def import_single(source: Path, out_dir: Path, generator: Path | None, base_config: str | Path | None,
                  log=print) -> Path:
    """An ALBERT or BERT folder (see `read_single`) -> a run directory."""
    family = hf_family(json.loads((source / "config.json").read_text()), source / "config.json")
    if generator:
        raise HFImportError(f"import: --generator pairs an ELECTRA generator; a {family.name} folder is one model")
    config, state, write_tokenizer, _ = read_single(source, load_config(base_config), family, log)
    write_imported_run(out_dir, config, write_tokenizer, state)
    log(f"wrote {out_dir} ({family.next_steps(out_dir)})")
    return out_dir


def write_imported_run(out_dir: Path, config: Config, write_tokenizer, state, step: int = 0,
                       source: str | None = None) -> None:
    """config.yaml, tokenizer/ and checkpoints/STEP (no data position: pretraining reads its data from the
    start), staged beside `out_dir` and renamed into place when complete."""
    from electra_jax.checkpoint import Checkpointer
    with staged_folder(out_dir, "import") as staging:
        save_config(config, staging / "config.yaml")
        write_tokenizer(staging / "tokenizer")
        checkpointer = Checkpointer(staging / "checkpoints", dataclasses.replace(config.checkpoint, async_save=False))
        checkpointer.save(step, state, imported_from=source)
        checkpointer.close()
