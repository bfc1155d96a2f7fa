"""The run directory, treated as the run's database: its tokenizer, its packed corpus (or the prepared data it
was checked against), the resolved config.yaml, a distillation's teacher record, and reading a finished
checkpoint's parameters back for export and fine-tuning.

RUN_DIR/config.yaml       the resolved config (vocabulary size filled in from the tokenizer)
RUN_DIR/tokenizer/        the run's tokenizer (trained here, copied from data.tokenizer or the prepared data)
RUN_DIR/data/             the packed corpus of a `data.corpus` run (prepared_L{seq_len}/)
RUN_DIR/checkpoints/STEP  Orbax checkpoints (state + data position)
RUN_DIR/teacher.json      a distillation run's teacher: what a resume must match
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from electra_jax.config import Config, ConfigError, load_config, masking_warning, save_config
from electra_jax.data.default_corpus import write_default_corpus
from electra_jax.data.prepare import METADATA, PackOptions, prepare, read_metadata
from electra_jax.data.sources import SkipReport, parse_source, read_documents
from electra_jax.data.text_tokenizer import SpecialIds, copy_tokenizer, load_text_tokenizer
from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
from electra_jax.families import family_of

TEACHER_RECORD = "teacher.json"


def check_inputs(config: Config) -> None:
    """Named input paths exist: checked before the run directory is made."""
    for f in config.data.corpus:
        if not Path(f).is_file():
            raise ConfigError(f"config: data.corpus file not found: {f}")
    if config.data.prepared and not (Path(config.data.prepared) / METADATA).is_file():
        raise ConfigError(f"config: data.prepared={config.data.prepared} has no {METADATA}; make it with "
                          f"`electra-jax prepare`")
    if config.data.tokenizer and not Path(config.data.tokenizer).exists():
        raise ConfigError(f"config: data.tokenizer={config.data.tokenizer} not found")


# ---------------------------------------------------------------------------- tokenizer and data

def prepare_data(config: Config, run_dir: Path, log=print) -> tuple[Config, Path, dict]:
    """(config with the vocabulary size, prepared folder, its metadata): `data.prepared` as given, or the
    corpus packed once into the run directory with the run's tokenizer (trained there if none is given)."""
    data = config.data
    tokenizer_dir = run_dir / "tokenizer"
    if data.prepared:
        folder = Path(data.prepared)
        metadata = read_metadata(folder)
        _check_layout(metadata, folder, data.seq_len, family_of(config.model).data_format)
        if data.tokenizer:
            _check_tokenizer(load_text_tokenizer(data.tokenizer), data.tokenizer, metadata, folder)
        if not tokenizer_dir.is_dir():  # the run directory is self-contained
            copy_tokenizer(folder / "tokenizer", tokenizer_dir)
    else:
        files = [Path(f) for f in data.corpus]
        if not files:
            files = [run_dir / "data" / "default_corpus.txt"]
            if not files[0].exists():
                write_default_corpus(files[0])
                log(f"wrote the embedded default corpus to {files[0]}")
        if not _has_tokenizer(tokenizer_dir):
            if data.tokenizer:
                copy_tokenizer(data.tokenizer, tokenizer_dir)
            else:
                TOKENIZER_TRAINERS[family_of(config.model).tokenizer](config, files, tokenizer_dir, log)
        folder = run_dir / "data" / f"prepared_L{data.seq_len}"
        if not (folder / METADATA).is_file():
            options = PackOptions(format=family_of(config.model).data_format, seq_len=data.seq_len, seed=data.seed,
                                  short_seq_prob=data.short_seq_prob,
                                  blank_lines_separate_docs=data.blank_lines_separate_docs,
                                  eval_fraction=data.eval_fraction)
            prepare([str(f) for f in files], tokenizer_dir, folder, options, workers=0, progress=False, log=log)
        metadata = read_metadata(folder)
    _check_tokenizer(load_text_tokenizer(tokenizer_dir), tokenizer_dir, metadata, folder)
    return with_vocab(config, metadata["tokenizer"]["vocab_size"]), folder, metadata


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()


def _train_sentencepiece(config: Config, files: list[Path], out: Path, log) -> None:
    from electra_jax.data.spm import SentencePieceError, save_sentencepiece, train_sentencepiece
    data = config.data
    log(f"training a SentencePiece tokenizer (vocab {data.vocab_size}) on {len(files)} file(s)")
    lines = (line for document in read_documents([parse_source(str(f)) for f in files], SkipReport())
             for line in document)
    try:
        model = train_sentencepiece(lines, data.vocab_size, lowercase=data.lowercase, strip_accents=data.strip_accents)
    except SentencePieceError as err:
        raise ConfigError(f"config: data.vocab_size={data.vocab_size}: {err}") from None
    save_sentencepiece(model, out, lowercase=data.lowercase, strip_accents=data.strip_accents)


def _train_wordpiece(config: Config, files: list[Path], out: Path, log) -> None:
    data = config.data
    log(f"training a WordPiece tokenizer (vocab {data.vocab_size}) on {len(files)} file(s)")
    save_tokenizer(train_wordpiece(files, data.vocab_size, lowercase=data.lowercase,
                                   strip_accents=data.strip_accents), out)


# The run's own vocabulary, of the kind its family names: WordPiece for ELECTRA, SentencePiece unigram for ALBERT.
TOKENIZER_TRAINERS = {"wordpiece": _train_wordpiece, "sentencepiece": _train_sentencepiece}


def _check_layout(metadata: dict, folder: Path, seq_len: int, data_format: str) -> None:
    if metadata["format"] != data_format:
        raise ConfigError(f"config: data.prepared={folder} holds {metadata['format']} examples; this run needs "
                          f"data prepared with --format {data_format}")
    if metadata["seq_len"] != seq_len:
        raise ConfigError(f"config: data.prepared={folder} was prepared with --seq-len {metadata['seq_len']}, but "
                          f"data.seq_len={seq_len}; set data.seq_len={metadata['seq_len']} or prepare again")


def _check_tokenizer(tokenizer, where, metadata: dict, folder: Path) -> None:
    made_with = metadata["tokenizer"]
    if tokenizer.fingerprint != made_with["fingerprint"]:
        raise ConfigError(f"config: the prepared data {folder} was made with another tokenizer (fingerprint "
                          f"{made_with['fingerprint'][:12]}, {made_with['vocab_size']} tokens) than {where} "
                          f"({tokenizer.fingerprint[:12]}, {tokenizer.vocab_size} tokens); prepare the corpus with "
                          f"--tokenizer {where}, or use a new run directory")


def special_ids(metadata: dict) -> SpecialIds:
    return SpecialIds(**metadata["tokenizer"]["special_ids"])


def with_vocab(config: Config, tokenizer_vocab: int) -> Config:
    if config.model.vocab_size == 0:
        return dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=tokenizer_vocab))
    if config.model.vocab_size != tokenizer_vocab:
        raise ConfigError(f"config: model.vocab_size={config.model.vocab_size} does not match the tokenizer's "
                          f"{tokenizer_vocab} tokens; set it to 0 to take the tokenizer's size")
    return config


def held_out_split(config: Config, data_folder: Path, metadata: dict) -> tuple[Path, str] | None:
    """(folder, split) of the held-out evaluation data, or None: `data.eval_prepared` (a whole prepared folder,
    checked against the training data), else the eval shards of the training data's folder."""
    data = config.data
    if data.eval_prepared:
        folder = Path(data.eval_prepared)
        if not (folder / METADATA).is_file():
            raise ConfigError(f"config: data.eval_prepared={folder} has no {METADATA}; make it with "
                              f"`electra-jax prepare`")
        held_metadata = read_metadata(folder)
        _check_layout(held_metadata, folder, data.seq_len, family_of(config.model).data_format)
        if held_metadata["tokenizer"]["fingerprint"] != metadata["tokenizer"]["fingerprint"]:
            raise ConfigError(f"config: data.eval_prepared={folder} was made with another tokenizer than the "
                              f"training data {data_folder}; prepare it with --tokenizer {data_folder / 'tokenizer'}")
        return folder, "train"
    held = metadata.get("eval")
    if data.eval_fraction and (held is None or held["fraction"] != data.eval_fraction):
        found = f"eval fraction {held['fraction']}" if held else "no held-out split"
        raise ConfigError(f"config: data.eval_fraction={data.eval_fraction}, but {data_folder} was packed with "
                          f"{found}; prepare the data with --eval-fraction {data.eval_fraction} (a corpus run: use a "
                          f"new run directory), or set data.eval_fraction={held['fraction'] if held else 0}")
    return (data_folder, "eval") if held else None


# ---------------------------------------------------------------------------- making the run directory

def _quiet(*_):
    pass


def start_run(config: Config, run_dir: Path, log=print):
    """Make the run directory: the tokenizer and packed corpus (once, on process 0; the other processes then
    read them) and the resolved config. Returns (config with the vocabulary size, data folder, its metadata,
    this process's log: process 0 speaks for the run)."""
    is_main = jax.process_index() == 0
    if not is_main:
        log = _quiet
    run_dir.mkdir(parents=True, exist_ok=True)
    warning = masking_warning(config)
    if warning:
        log(warning)
    if is_main:
        config_with_vocab, data_folder, metadata = prepare_data(config, run_dir, log)
        save_config(config_with_vocab, run_dir / "config.yaml")
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("electra-jax: run directory ready")
    config, data_folder, metadata = (config_with_vocab, data_folder, metadata) if is_main else prepare_data(
        config, run_dir, log)
    return config, data_folder, metadata, log


# ---------------------------------------------------------------------------- a distillation's teacher

RESUME_KEYS = ("digest", "student_layers", "layer_map", "freeze_embeddings", "masked")  # what shapes the state


def check_teacher_record(run_dir: Path, record: dict, write: bool) -> None:
    """Until the first finished checkpoint the record is (re)written (by process 0, `write`); a run with one
    must keep its teacher and student layout. Every process checks, so all of them stop together."""
    path = run_dir / TEACHER_RECORD
    checkpoints = run_dir / "checkpoints"
    finished = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())  # not Orbax's tmp
    if not finished:
        if write:
            path.write_text(json.dumps(record, indent=2) + "\n")
        return
    if not path.is_file():
        raise ConfigError(f"distill: {run_dir} holds checkpoints but no {TEACHER_RECORD}; it is not a "
                          f"distillation run directory: use a new --run-dir")
    saved = json.loads(path.read_text())
    changed = [key for key in RESUME_KEYS if saved.get(key) != record[key]]
    if changed:
        raise ConfigError(f"distill: {run_dir} was started with another {' and '.join(changed)} (teacher "
                          f"{saved.get('source')}, {saved.get('student_layers')} student layers, layer map "
                          f"{saved.get('layer_map')}, embeddings {'frozen' if saved.get('freeze_embeddings') else 'trained'}, "
                          f"logit/MLM terms {'on' if saved.get('masked') else 'off'}); give the same ones to resume, "
                          f"or use a new --run-dir")


# ---------------------------------------------------------------------------- reading a run back

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
    from electra_jax.state import single_device_state

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
