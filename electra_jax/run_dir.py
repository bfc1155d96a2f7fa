"""The run directory, treated as the run's database: its tokenizer, its packed corpus (or the prepared data it
was checked against), the resolved config.yaml, a distillation's teacher record, and reading a finished
checkpoint's parameters back for export and fine-tuning.

RUN_DIR/.lock             held by the one process that trains in it (see `hold_run_dir`)
RUN_DIR/config.yaml       the resolved config of the latest accepted start or resume (vocabulary size filled
                          in from the tokenizer), written once the checkpoint restored
RUN_DIR/tokenizer/        the run's tokenizer (trained here, copied from data.tokenizer or the prepared data)
RUN_DIR/data/             the packed corpus of a `data.corpus` run (prepared_L{seq_len}/, one per phase length)
RUN_DIR/checkpoints/STEP  Orbax checkpoints (state + data position); checkpoints.damaged/ what did not restore
RUN_DIR/metrics.jsonl     one record per logged step (metrics.discarded.jsonl: steps a resume went back over)
RUN_DIR/teacher.json      a distillation run's teacher: what a resume must match

Every file is written whole or not at all (a temporary name, then a rename), so a crash at any point leaves
a run directory that the same command resumes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path

import jax
import numpy as np
from jax.experimental import multihost_utils

from electra_jax.config import Config, ConfigError, load_config, masking_warning, save_config, to_dict
from electra_jax.data.default_corpus import write_default_corpus
from electra_jax.data.prepare import METADATA, PackOptions, prepare, read_metadata
from electra_jax.data.text_tokenizer import SpecialIds, copy_tokenizer, load_text_tokenizer
from electra_jax.data.vocabulary import VocabularyOptions, train_vocabulary
from electra_jax.families import family_of
from electra_jax.phases import Phase, run_phases, started
from electra_jax.storage import RunDirInUse, run_lock, staged_folder, write_atomic

TEACHER_RECORD = "teacher.json"


def check_inputs(config: Config) -> None:
    """Named input paths exist: checked before the run directory is made."""
    for f in config.data.corpus:
        if not Path(f).is_file():
            raise ConfigError(f"config: data.corpus file not found: {f}")
    if config.data.prepared and not (Path(config.data.prepared) / METADATA).is_file():
        raise ConfigError(f"config: data.prepared={config.data.prepared} has no {METADATA}; make it with "
                          f"`electra-jax prepare`")
    for i, phase in enumerate(config.train.phases):
        if phase.prepared and not (Path(phase.prepared) / METADATA).is_file():
            raise ConfigError(f"config: train.phases[{i}].prepared={phase.prepared} has no {METADATA}; make it with "
                              f"`electra-jax prepare --seq-len {phase.seq_len}`")
    if config.data.tokenizer and not Path(config.data.tokenizer).exists():
        raise ConfigError(f"config: data.tokenizer={config.data.tokenizer} not found")


# ---------------------------------------------------------------------------- tokenizer and data

def prepare_data(config: Config, run_dir: Path, log=print) -> tuple[Config, tuple[Path, ...], dict]:
    """(config with the vocabulary size, each phase's prepared folder, the first one's metadata): `data.prepared`
    (or a phase's own `prepared`) as given, or the corpus packed once per phase length into the run directory
    with the run's tokenizer (trained there if none is given). Every folder is checked, before any compile."""
    data = config.data
    tokenizer_dir = run_dir / "tokenizer"
    phases = run_phases(config)
    data_format = family_of(config.model).data_format
    if phases[0].config.data.prepared:  # validated: then every phase names its prepared folder
        folders = tuple(Path(phase.config.data.prepared) for phase in phases)
        for phase, folder in zip(phases, folders):
            _check_layout(read_metadata(folder), folder, phase.seq_len, data_format, phase)
        if data.tokenizer:
            given = load_text_tokenizer(data.tokenizer)
            for folder in dict.fromkeys(folders):  # each folder once
                _check_tokenizer(given, data.tokenizer, read_metadata(folder), folder)
        if not _has_tokenizer(tokenizer_dir):  # the run directory is self-contained
            with staged_folder(tokenizer_dir, "pretrain") as staging:
                copy_tokenizer(folders[0] / "tokenizer", staging)
    else:
        files = [Path(f) for f in data.corpus]
        if not files:
            files = [run_dir / "data" / "default_corpus.txt"]
            if not files[0].exists():
                write_default_corpus(files[0])
                log(f"wrote the embedded default corpus to {files[0]}")
        if not _has_tokenizer(tokenizer_dir):
            if data.tokenizer:
                with staged_folder(tokenizer_dir, "pretrain") as staging:
                    copy_tokenizer(data.tokenizer, staging)
            else:
                _train_tokenizer(config, files, tokenizer_dir, log)
        folders = tuple(run_dir / "data" / f"prepared_L{phase.seq_len}" for phase in phases)
        for phase, folder in zip(phases, folders):
            if not (folder / METADATA).is_file():
                options = PackOptions(format=data_format, seq_len=phase.seq_len, seed=data.seed,
                                      short_seq_prob=data.short_seq_prob,
                                      blank_lines_separate_docs=data.blank_lines_separate_docs,
                                      eval_fraction=data.eval_fraction)
                prepare([str(f) for f in files], tokenizer_dir, folder, options, workers=0, progress=False, log=log)
    tokenizer = load_text_tokenizer(tokenizer_dir)
    if tokenizer.vocab_size <= len(dataclasses.fields(tokenizer.specials)):
        raise ConfigError(f"config: the run's tokenizer {tokenizer_dir} holds only its {tokenizer.vocab_size} special "
                          f"tokens (left by a run that found no text); remove {tokenizer_dir} and the data folder "
                          f"{run_dir / 'data'}, or use a new run directory")
    for folder in dict.fromkeys(folders):
        _check_tokenizer(tokenizer, tokenizer_dir, read_metadata(folder), folder)
    metadata = read_metadata(folders[0])
    return with_vocab(config, metadata["tokenizer"]["vocab_size"]), folders, metadata


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()


def _train_tokenizer(config: Config, files: list[Path], out: Path, log) -> None:
    """The run's own vocabulary, of the kind its family names (WordPiece for ELECTRA, SentencePiece unigram for
    ALBERT), trained as `electra-jax tokenizer train` does: the same reader, skip report and coverage report,
    and a folder that appears only when complete."""
    data = config.data
    kind = family_of(config.model).tokenizer
    log(f"training a {kind} tokenizer (vocab {data.vocab_size}) on {len(files)} file(s)")
    options = VocabularyOptions(kind=kind, vocab_size=data.vocab_size, lowercase=data.lowercase,
                                strip_accents=data.strip_accents)
    train_vocabulary([str(f) for f in files], out, options, log=log)


def _check_layout(metadata: dict, folder: Path, seq_len: int, data_format: str, phase: Phase | None = None) -> None:
    """The folder holds the family's examples at the length of the run (or of the curriculum phase it feeds)."""
    field = phase.data_field if phase is not None else "data.prepared"
    if metadata["format"] != data_format:
        raise ConfigError(f"config: {field}={folder} holds {metadata['format']} examples; this run needs "
                          f"data prepared with --format {data_format}")
    if metadata["seq_len"] != seq_len:
        if phase is not None and phase.named:
            raise ConfigError(f"config: {field}={folder} was prepared with --seq-len {metadata['seq_len']}, but "
                              f"train.phases[{phase.index}].seq_len={seq_len}; set train.phases[{phase.index}].prepared "
                              f"to data prepared with --seq-len {seq_len}")
        raise ConfigError(f"config: {field}={folder} was prepared with --seq-len {metadata['seq_len']}, but "
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

@contextlib.contextmanager
def hold_run_dir(run_dir: Path, command: str):
    """The run directory's lock for the block: one trainer per run directory. Process 0 of a multi-process run
    holds it for all of them; when it cannot, every process stops with the same one line."""
    refused = None
    with contextlib.ExitStack() as stack:
        if jax.process_index() == 0:
            try:
                stack.enter_context(run_lock(run_dir, command))
            except ConfigError as err:
                refused = err
        if jax.process_count() > 1:
            anyone = int(multihost_utils.broadcast_one_to_all(np.int32(refused is not None)))
            if anyone and refused is None:
                refused = RunDirInUse(f"{command}: process 0 could not take {run_dir}; see its message")
        if refused is not None:
            raise refused
        yield


def _quiet(*_):
    pass


def finished_checkpoints(run_dir: Path) -> list[int]:
    """Steps of the finished checkpoints on disk (an Orbax save in flight has a temporary name)."""
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


# A checkpoint's state has the shapes of these settings, and its data position counts batches of these: a
# resume keeps them. (Everything else, such as the learning rate, steps or dropout, may change on resume.)
RESUME_FIXED = {
    "model": ("architecture", "vocab_size", "embedding_size", "hidden_size", "num_layers", "num_heads",
              "intermediate_size", "generator_fraction", "generator_hidden", "generator_heads",
              "generator_intermediate", "generator_layers", "num_hidden_groups", "inner_group_num", "max_position_embeddings",
              "type_vocab_size", "param_dtype"),
    "optimizer": ("kind",),
    "objective": ("embedding_sharing",),
    "data": ("seq_len", "seed"),
    "train": ("batch_size",),
}


def check_resume(config: Config, run_dir: Path) -> None:
    """A run directory with checkpoints resumes only with the settings its state and data position were made
    with (compared with its config.yaml): a change is refused in one line before anything is written."""
    steps = finished_checkpoints(run_dir)
    saved_path = run_dir / "config.yaml"
    if not steps or not saved_path.is_file():
        return
    saved_config = load_config(saved_path)
    saved, given = to_dict(saved_config), to_dict(config)
    # A curriculum fixes the length and batch of the phases begun, checked below, not one data.seq_len.
    curriculum = bool(saved_config.train.phases or config.train.phases)
    command = family_of(config.model).trained_by(config)
    for section, names in RESUME_FIXED.items():
        if steps[-1] == 0 and section in ("data", "train"):  # an import: no data position to keep
            continue
        for name in names:
            if curriculum and (section, name) in PHASE_FIXED:
                continue
            was, now = saved[section][name], given[section][name]
            if was != now and not (section, name, now) == ("model", "vocab_size", 0):  # 0: from the tokenizer
                raise ConfigError(f"{command}: {section}.{name}={now}, but the run in {run_dir} was made with "
                                  f"{section}.{name}={was} (checkpoints up to step {steps[-1]}); a checkpoint keeps "
                                  f"it: resume with {section}.{name}={was}, or start a new run with another "
                                  f"--run-dir")
    if curriculum and steps[-1] > 0:
        begun = [_phase_shape(p) for p in started(run_phases(saved_config), steps[-1])]
        asked = [_phase_shape(p) for p in started(run_phases(config), steps[-1])]
        if begun != asked:
            raise ConfigError(f"{command}: the run in {run_dir} has begun {'; '.join(begun)} (checkpoints up to step "
                              f"{steps[-1]}), but this config has {'; '.join(asked)} by then; a checkpoint keeps the "
                              f"phases it has begun: resume with those (later phases may change), or start a new run "
                              f"with another --run-dir")


PHASE_FIXED = (("data", "seq_len"), ("train", "batch_size"))


def _phase_shape(phase: Phase) -> str:
    return f"from step {phase.first} seq_len {phase.seq_len} batch {phase.batch_size}"


def start_run(config: Config, run_dir: Path, log=print):
    """Make the run directory: the tokenizer and packed corpus (once, on process 0; the other processes then
    read them), and check a resume's settings. Returns (config with the vocabulary size, each phase's data
    folder, the first one's metadata, this process's log: process 0 speaks for the run). config.yaml is written by `record_config`
    once the state is restored or initialised."""
    is_main = jax.process_index() == 0
    if not is_main:
        log = _quiet
    run_dir.mkdir(parents=True, exist_ok=True)
    check_resume(config, run_dir)  # before any data work (another data.seq_len would pack the corpus again)
    for phase in run_phases(config):  # each phase masks at its own length
        warning = masking_warning(phase.config)
        if warning:
            log(f"{phase.field}: {warning}" if phase.named else warning)
    if is_main:
        config_with_vocab, data_folders, metadata = prepare_data(config, run_dir, log)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("electra-jax: run directory ready")
    config, data_folders, metadata = (config_with_vocab, data_folders, metadata) if is_main else prepare_data(
        config, run_dir, log)
    check_resume(config, run_dir)  # the vocabulary size, now known
    return config, data_folders, metadata, log


def record_config(config: Config, run_dir: Path) -> None:
    """config.yaml of the accepted run: what the next checkpoints are made with (process 0)."""
    if jax.process_index() == 0:
        save_config(config, run_dir / "config.yaml")


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
            write_atomic(path, json.dumps(record, indent=2) + "\n")
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


def load_run_params(run_dir: Path, step: int | None, log=print) -> tuple[Config, dict, int]:
    """The run's config and the parameters of `step` (default: the newest finished checkpoint that restores;
    a damaged one is passed over with a warning)."""
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
        if step is not None and step not in steps:
            raise ValueError(f"export: no checkpoint for step {step} in {run_dir / 'checkpoints'} "
                             f"(there are: {', '.join(map(str, steps))})")
        # The newest that restores (or the one asked for, with no fallback: another step is not what was asked).
        step, params, _ = checkpointer.restore_newest(lambda s: checkpointer.restore_params(s, abstract.params),
                                                      log=log, steps=steps if step is None else [step])
    finally:
        checkpointer.close()
    return config, jax.tree.map(np.asarray, params), step
