"""ELECTRA and ALBERT pretraining: data -> sharded state -> jitted step -> metrics and checkpoints.

Reads top to bottom: `prepare_data` (packed ArrayRecord shards), `build_model`, `state_shardings` (abstract,
sharded), `make_train_step` (an `objectives` Objective, accumulation and the update inside one jit),
`start_run` (the run directory), `train_loop` (the loop) and `pretrain`, which strings them together.
Distillation (`distill.py`) runs through the same pieces with its own objective.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct
from jax.experimental import multihost_utils

from electra_jax.checkpoint import Checkpointer, abstract_with_shardings
from electra_jax.config import Config, ConfigError, MeshConfig, masking_warning, save_config, validate
from electra_jax.data.default_corpus import write_default_corpus
from electra_jax.data.loader import PretrainingData, batch_hash, held_out_batches
from electra_jax.data.prepare import METADATA, PackOptions, prepare, read_metadata
from electra_jax.data.sources import SkipReport, parse_source, read_documents
from electra_jax.data.text_tokenizer import SpecialIds, copy_tokenizer, load_text_tokenizer
from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
from electra_jax.mesh import batch_sharding, logical_rules, make_mesh, replicated
from electra_jax.metrics import MetricWriter, plot_metrics
from electra_jax.models.albert import Albert
from electra_jax.models.bert import Bert
from electra_jax.models.electra import Electra
from electra_jax.optim import make_optimizer, make_schedule
from electra_jax.preemption import PreemptionWatch
from electra_jax.objectives.albert import AlbertObjective
from electra_jax.objectives.electra import ElectraObjective


# What the progress bar and the closing line show, per architecture: (label, metric).
# A BERT is trained only by distillation; a metric whose loss is switched off is not shown.
PROGRESS = {"electra": [("f1", "replaced_f1")], "albert": [("mlm_acc", "mlm_accuracy"), ("sop_acc", "sop_accuracy")],
            "bert": [("hidden", "hidden_loss"), ("attention", "attention_loss"), ("logit", "logit_loss"),
                     ("mlm_acc", "mlm_accuracy")]}
SUMMARY = {"electra": [("generator loss", "generator_loss"), ("discriminator accuracy", "discriminator_accuracy"),
                       ("replaced-token F1", "replaced_f1")],
           "albert": [("MLM loss", "mlm_loss"), ("MLM accuracy", "mlm_accuracy"), ("SOP accuracy", "sop_accuracy")],
           "bert": [("hidden-state MSE", "hidden_loss"), ("attention MSE", "attention_loss"),
                    ("logit KL", "logit_loss"), ("MLM loss", "mlm_loss"), ("MLM accuracy", "mlm_accuracy")]}


def shown(table: dict, architecture: str, values: dict) -> list[tuple[str, str]]:
    """The (label, metric) pairs of `table` that this run reports."""
    return [(label, key) for label, key in table[architecture] if key in values]


class NonFiniteLossError(RuntimeError):
    pass


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


# ---------------------------------------------------------------------------- data

def prepare_data(config: Config, run_dir: Path, log=print) -> tuple[Config, Path, dict]:
    """(config with the vocabulary size, prepared folder, its metadata): `data.prepared` as given, or the
    corpus packed once into the run directory with the run's tokenizer (trained there if none is given)."""
    data = config.data
    tokenizer_dir = run_dir / "tokenizer"
    if data.prepared:
        folder = Path(data.prepared)
        metadata = read_metadata(folder)
        _check_layout(metadata, folder, data.seq_len, data_format(config.model.architecture))
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
                _train_tokenizer(config, files, tokenizer_dir, log)
        folder = run_dir / "data" / f"prepared_L{data.seq_len}"
        if not (folder / METADATA).is_file():
            options = PackOptions(format=data_format(config.model.architecture), seq_len=data.seq_len, seed=data.seed,
                                  short_seq_prob=data.short_seq_prob,
                                  blank_lines_separate_docs=data.blank_lines_separate_docs,
                                  eval_fraction=data.eval_fraction)
            prepare([str(f) for f in files], tokenizer_dir, folder, options, workers=0, progress=False, log=log)
        metadata = read_metadata(folder)
    _check_tokenizer(load_text_tokenizer(tokenizer_dir), tokenizer_dir, metadata, folder)
    return with_vocab(config, metadata["tokenizer"]["vocab_size"]), folder, metadata


def data_format(architecture: str) -> str:
    """ALBERT trains on sentence pairs; ELECTRA and BERT students on packed segments."""
    return "albert" if architecture == "albert" else "electra"


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (folder / "spiece.model").is_file()


def _train_tokenizer(config: Config, files: list[Path], out: Path, log) -> None:
    """The run's own vocabulary: WordPiece for ELECTRA, SentencePiece unigram for ALBERT."""
    data = config.data
    if config.model.architecture == "albert":
        from electra_jax.data.spm import SentencePieceError, save_sentencepiece, train_sentencepiece
        log(f"training a SentencePiece tokenizer (vocab {data.vocab_size}) on {len(files)} file(s)")
        lines = (line for document in read_documents([parse_source(str(f)) for f in files], SkipReport())
                 for line in document)
        try:
            model = train_sentencepiece(lines, data.vocab_size, lowercase=data.lowercase,
                                        strip_accents=data.strip_accents)
        except SentencePieceError as err:
            raise ConfigError(f"config: data.vocab_size={data.vocab_size}: {err}") from None
        save_sentencepiece(model, out, lowercase=data.lowercase, strip_accents=data.strip_accents)
        return
    log(f"training a WordPiece tokenizer (vocab {data.vocab_size}) on {len(files)} file(s)")
    save_tokenizer(train_wordpiece(files, data.vocab_size, lowercase=data.lowercase,
                                   strip_accents=data.strip_accents), out)


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
        _check_layout(held_metadata, folder, data.seq_len, data_format(config.model.architecture))
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


# ---------------------------------------------------------------------------- model and state

MODELS = {"electra": Electra, "albert": Albert, "bert": Bert}


def build_model(config: Config) -> Electra | Albert | Bert:
    return MODELS[config.model.architecture](config.model)


def _dummy_inputs(config: Config):
    ids = jnp.zeros((1, config.data.seq_len), jnp.int32)
    return ids, ids, jnp.ones_like(ids), jnp.zeros((1, config.max_predictions), jnp.int32)


def state_shardings(config: Config, model: Electra, tx: optax.GradientTransformation, mesh):
    """Abstract init -> logical partition specs -> mesh shardings. Returns the shardings, the abstract state
    carrying them (the target of a restore) and the function that builds the state.

    `jax.jit(init, out_shardings=shardings)(rng)` then creates each parameter directly in its shards:
    full-size parameters never materialise on one device.
    """
    def boxed_state(rng):
        params = model.init({"params": rng}, *_dummy_inputs(config))["params"]
        return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    boxed_abstract = jax.eval_shape(boxed_state, jax.random.key(0))
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_abstract), mesh, logical_rules(config))
    abstract = abstract_with_shardings(nn.unbox(boxed_abstract), shardings)
    return shardings, abstract, lambda rng: nn.unbox(boxed_state(rng))


# ---------------------------------------------------------------------------- the step

def make_objective(config: Config, model, specials: SpecialIds, word_starts_V=None):
    if config.model.architecture == "albert":
        return AlbertObjective(config, model, specials, word_starts_V)
    return ElectraObjective(config, model, specials)


def make_train_step(config: Config, model, tx, specials: SpecialIds, word_starts_V=None, objective=None):
    """`train_step(state, batch, frozen=None) -> (state, metrics)`. `frozen` (a distillation teacher's
    parameters) reaches the objective's loss as an argument of the jitted step, never as a constant."""
    objective = objective or make_objective(config, model, specials, word_starts_V)
    accum = config.train.grad_accum_steps
    base_rng = jax.random.key(config.train.seed + 1)

    def train_step(state: TrainState, batch: dict, frozen=None):
        rng = jax.random.fold_in(base_rng, state.step)
        batch_rng, sample_rng, *micro_rngs = jax.random.split(rng, 2 + 2 * accum)
        micro_rngs = jnp.stack(micro_rngs).reshape(accum, 2)  # two dropout keys per micro-batch
        # Masking over the whole batch; its counts normalise every micro-batch, so accumulation equals one batch.
        whole, counts = objective.prepare((batch_rng, sample_rng), batch)
        grad_fn = jax.grad(lambda params, micro, keys: objective.loss(params, micro, keys, counts, frozen),
                           has_aux=True)
        if accum == 1:
            grads, sums = grad_fn(state.params, whole, micro_rngs[0])
        else:
            micro_batches = jax.tree.map(lambda x: x.reshape(accum, x.shape[0] // accum, *x.shape[1:]), whole)

            def accumulate(carry, inputs):
                grads, sums = grad_fn(state.params, *inputs)
                return jax.tree.map(jnp.add, carry, (grads, sums)), None

            zeros = (jax.tree.map(jnp.zeros_like, state.params), objective.zero_sums())
            (grads, sums), _ = jax.lax.scan(accumulate, zeros, (micro_batches, micro_rngs))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params = objective.keep_frozen(state.params, params)  # frozen parameters as they were, not p + 0
        metrics = objective.metrics(sums, counts)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["param_norm"] = optax.tree.norm(params)
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


# Held-out evaluation draws its masking and samples from this key folded with the batch index, whatever the
# run's seed or step: every evaluation of every run masks the same positions of the same examples.
EVAL_KEY_SEED = 20200323


def make_eval_step(objective):
    """`eval_step(params, batch, index, frozen=None) -> (summable tree, counts)`: one held-out batch, no dropout."""
    def eval_step(params, batch, index, frozen=None):
        key = jax.random.fold_in(jax.random.key(EVAL_KEY_SEED), index)
        mask_rng, sample_rng, dropout_rng = jax.random.split(key, 3)
        whole, counts = objective.prepare((mask_rng, sample_rng), batch)
        return objective.evaluate(params, whole, jax.random.split(dropout_rng), counts, frozen), counts
    return eval_step


class Training(NamedTuple):
    model: Electra | Albert | Bert
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    shardings: Any  # of the state
    abstract_state: Any  # ShapeDtypeStructs carrying those shardings: the target of a restore
    init: Any  # () -> freshly initialised, sharded state
    batch_sharding: Any
    step_fn: Any  # jitted (state, batch[, frozen]) -> (state, metrics); donates the state
    objective: Any
    eval_fn: Any  # jitted (params, batch, index[, frozen]) -> (summable tree, counts): held-out evaluation


def build_optimizer(config: Config) -> tuple[optax.Schedule, optax.GradientTransformation]:
    schedule = make_schedule(config.schedule, config.optimizer.learning_rate, config.train.steps)
    return schedule, make_optimizer(config.optimizer, schedule)


def single_device_state(config: Config):
    """(abstract state, state initialiser) on one of this process's devices: for tools that read or write a
    run's checkpoints outside training (export, import, a distillation teacher on every process of a run),
    whatever mesh the run trained on."""
    config = dataclasses.replace(config, mesh=MeshConfig(data=1))
    _, tx = build_optimizer(config)
    _, abstract, make_state = state_shardings(config, build_model(config), tx,
                                              make_mesh(config, jax.local_devices()[:1]))
    return abstract, make_state


def setup_training(config: Config, mesh, specials: SpecialIds, word_starts_V=None, *, objective=None,
                   optimizer=None, frozen_shardings=None) -> Training:
    """Model, optimizer, state shardings, a sharded initialiser and the jitted step for one mesh.
    `word_starts_V` (per token id: does it begin a word?) is ALBERT's, for whole-word masking. Distillation
    passes its objective, its (schedule, optimizer) and the shardings of the frozen teacher parameters that
    the step then takes as its third argument."""
    model = build_model(config)
    objective = objective or make_objective(config, model, specials, word_starts_V)
    schedule, tx = optimizer or build_optimizer(config)
    shardings, abstract, make_state = state_shardings(config, model, tx, mesh)
    init = functools.partial(jax.jit(make_state, out_shardings=shardings), jax.random.key(config.train.seed))
    batch_spec = batch_sharding(mesh, logical_rules(config))
    frozen = () if frozen_shardings is None else (frozen_shardings,)
    step_fn = jax.jit(make_train_step(config, model, tx, specials, word_starts_V, objective), donate_argnums=0,
                      in_shardings=(shardings, batch_spec, *frozen), out_shardings=(shardings, replicated(mesh)))
    eval_fn = jax.jit(make_eval_step(objective), out_shardings=replicated(mesh),
                      in_shardings=(shardings.params, batch_spec, replicated(mesh), *frozen))
    return Training(model, tx, schedule, shardings, abstract, init, batch_spec, step_fn, objective, eval_fn)


# ---------------------------------------------------------------------------- the loop

def _check_inputs(config: Config) -> None:
    """Named input paths exist: checked before the run directory is made."""
    for f in config.data.corpus:
        if not Path(f).is_file():
            raise ConfigError(f"config: data.corpus file not found: {f}")
    if config.data.prepared and not (Path(config.data.prepared) / METADATA).is_file():
        raise ConfigError(f"config: data.prepared={config.data.prepared} has no {METADATA}; make it with "
                          f"`electra-jax prepare`")
    if config.data.tokenizer and not Path(config.data.tokenizer).exists():
        raise ConfigError(f"config: data.tokenizer={config.data.tokenizer} not found")


def _to_host(metrics) -> dict[str, float]:
    return {name: float(value) for name, value in jax.device_get(metrics).items()}


def _check_finite(step: int, values: dict[str, float], checkpointer: Checkpointer) -> None:
    bad = [name for name in ("loss", "grad_norm", "param_norm") if not math.isfinite(values[name])]
    if bad:
        checkpointer.wait()  # let an in-flight save of an earlier, good step finish intact
        latest = checkpointer.latest_step()
        raise NonFiniteLossError(
            f"non-finite {', '.join(bad)} at step {step} (loss={values['loss']}); stopped without saving. "
            f"Last good checkpoint: step {latest}. Lower optimizer.learning_rate or check the data, then rerun "
            f"to resume.")


def _quiet(*_):
    pass


def make_evaluate(config: Config, training: Training, held_out: tuple[Path, str], frozen_args: tuple, log):
    """`evaluate(params) -> {"eval_<metric>": value, ..., "eval_seconds": s}` over the fixed held-out batches
    (this host's rows of each, as global arrays)."""
    folder, split = held_out
    t = config.train
    host_batches = held_out_batches(folder, split, t.batch_size, t.eval_batches, jax.process_index(),
                                    jax.process_count())
    if not host_batches:
        metadata = read_metadata(folder)
        examples = metadata["eval"]["examples"] if split == "eval" else metadata["counts"]["examples"]
        raise ConfigError(f"config: the held-out data in {folder} has {examples} examples, fewer than one batch of "
                          f"train.batch_size={t.batch_size}; hold out more (data.eval_fraction) or set "
                          f"train.eval_every=0")
    batches = [{name: jax.make_array_from_process_local_data(training.batch_sharding, array)
                for name, array in batch.items()} for batch in host_batches]
    log(f"held-out evaluation every {t.eval_every} steps: {len(batches)} batches of {t.batch_size} from {folder}"
        f"{' (eval shards)' if split == 'eval' else ''}")

    def evaluate(params) -> dict[str, float]:
        start = time.perf_counter()
        total = counts = None
        for index, batch in enumerate(batches):
            out = training.eval_fn(params, batch, jnp.int32(index), *frozen_args)
            total, counts = out if total is None else jax.tree.map(jnp.add, (total, counts), out)
        values = training.objective.eval_metrics(*jax.device_get((total, counts)))
        evaluated = {f"eval_{name}": float(value) for name, value in values.items() if name != "tokens"}
        evaluated["eval_seconds"] = time.perf_counter() - start
        return evaluated

    return evaluate


def pretrain(config: Config, run_dir: str | Path, log=print, progress: bool = True) -> dict:
    """Train (or resume) in `run_dir`; returns a summary of the run."""
    run_dir = Path(run_dir)
    validate(config, jax.device_count())  # mesh and batch errors before any data work or compile
    if config.model.architecture == "bert":
        raise ConfigError("config: model.architecture=bert is for imported models and distilled students; "
                          "pretrain an electra or albert model (or distill a bert with `electra-jax distill`)")
    _check_inputs(config)
    config, data_folder, metadata, log = start_run(config, run_dir, log)
    mesh = make_mesh(config)
    word_starts = (load_text_tokenizer(run_dir / "tokenizer").word_starts()
                   if config.model.architecture == "albert" else None)
    training = setup_training(config, mesh, special_ids(metadata), word_starts)
    return train_loop(config, run_dir, training, data_folder, training.init, log, progress)


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


def train_loop(config: Config, run_dir: Path, training: Training, data_folder: Path, init, log=print,
               progress: bool = True, frozen=None) -> dict:
    """Resume from the newest checkpoint (or start from `init()`), run `training.step_fn(state, batch[, frozen])`
    to train.steps with metrics one step late, held-out evaluation every train.eval_every steps, checkpoints by
    policy and on SIGTERM; returns a summary. `frozen`: parameters every step takes but does not train."""
    is_main = jax.process_index() == 0
    schedule = training.schedule
    frozen_args = () if frozen is None else (frozen,)
    held_out = held_out_split(config, data_folder, read_metadata(data_folder))  # a bad eval set fails before compiling
    evaluate = (make_evaluate(config, training, held_out, frozen_args, log)
                if held_out and config.train.eval_every else None)
    data = PretrainingData(data_folder, config.train.batch_size, config.data.seed, jax.process_index(),
                           jax.process_count())
    checkpointer = Checkpointer(run_dir / "checkpoints", config.checkpoint)
    start = checkpointer.latest_step()
    if start is not None:  # step 0 is an imported model
        state = checkpointer.restore(start, training.abstract_state, data)
        log(f"resumed from step {start} in {run_dir / 'checkpoints'}")
    else:
        start, state = 0, init()
    end = config.train.steps
    if config.train.stop_after:
        end = min(end, start + config.train.stop_after)
    batch_spec = training.batch_sharding

    def next_batch():
        """The next global batch (from this host's slice) and the digest of this host's input ids."""
        local = next(data)
        batch = {name: jax.make_array_from_process_local_data(batch_spec, array) for name, array in local.items()}
        return batch, batch_hash({"input_ids": local["input_ids"]})

    writer = MetricWriter(run_dir, enabled=is_main)
    bar = None
    if progress and is_main:
        from tqdm import tqdm
        task = "distill" if config.model.architecture == "bert" else "pretrain"  # a BERT trains only by distillation
        bar = tqdm(total=end, initial=start, desc=task, unit="step", mininterval=2.0, dynamic_ncols=True)
    pending = None  # (step, device metrics): fetched one step late so logging never stalls the device
    last_values: dict[str, float] = {}
    window_tokens, window_start = 0.0, time.perf_counter()

    def handle(step, metrics, digest, evaluated=None):
        nonlocal last_values, window_tokens, window_start
        values = _to_host(metrics)
        _check_finite(step, values, checkpointer)
        values["batch_hash"] = digest
        values["learning_rate"] = float(schedule(step - 1))
        window_tokens += values["tokens"]
        if evaluated:  # the eval seconds are not training time
            values.update(evaluated)
            window_start += evaluated["eval_seconds"]
        if step % config.train.log_every == 0 or step == end or evaluated:
            now = time.perf_counter()
            values["tokens_per_second"] = window_tokens / max(now - window_start, 1e-9)
            window_tokens, window_start = 0.0, now
            writer.write(step, values)
            if bar is not None:
                headline = {name: f"{values[key]:.3f}" for name, key in shown(PROGRESS, config.model.architecture,
                                                                               values)}
                bar.set_postfix(loss=f"{values['loss']:.3f}", **headline,
                                tok_s=f"{values['tokens_per_second']:.0f}", refresh=False)
        last_values = values

    # On a CPU a step's temporaries come from host malloc: with two steps in flight both sets are live and
    # the heap that keeps freed memory (host_memory.py) fragments (8.6 GiB instead of 2.8 for ELECTRA-small
    # at batch 32), so there the previous step is finished before the next is dispatched.
    one_step_in_flight = jax.default_backend() == "cpu"
    preempted_at = None
    try:
        with PreemptionWatch() as watch:
            for step in range(start + 1, end + 1):
                batch, digest = next_batch()  # read while the device still runs the previous step
                if one_step_in_flight and pending is not None:
                    handle(*pending)
                    pending = None
                state, metrics = training.step_fn(state, batch, *frozen_args)
                if pending is not None:
                    handle(*pending)
                pending = (step, metrics, digest)
                if bar is not None:
                    bar.update(1)
                preempted = watch.reached(step, checkpointer)  # every step: the multi-host protocol needs it
                due = evaluate is not None and (step % config.train.eval_every == 0 or step == end)
                evaluated = evaluate(state.params) if due else None  # before the next step donates the state
                save = checkpointer.should_save(step) or preempted or step == end
                if save or evaluated:
                    handle(*pending, evaluated)  # never save a state whose loss we have not seen to be finite
                    pending = None
                if save:
                    checkpointer.save(step, state, data)
                if preempted:
                    preempted_at = step
                    break
        if pending is not None:
            handle(*pending)
    finally:
        if bar is not None:
            bar.close()
        writer.close()
        checkpointer.close()
    plot = plot_metrics(writer.path, run_dir / "curves.png") if is_main and writer.path.exists() else None
    if preempted_at is not None:
        log(f"preempted (SIGTERM): saved step {preempted_at} in {run_dir / 'checkpoints'}; run the same command "
            f"again to resume")
    return {"run_dir": run_dir, "start_step": start, "end_step": preempted_at or end, "final": last_values,
            "preempted": preempted_at is not None,
            "checkpoints": run_dir / "checkpoints", "metrics": writer.path, "plot": plot,
            "tensorboard": run_dir / "tensorboard"}
