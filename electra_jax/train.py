"""Pretraining (and distillation) of any family: the jitted step -> the loop.

Reads top to bottom: `make_train_step` (an `objectives` Objective, gradient accumulation and the update
inside one jit), `setup_training` (model, optimizer, sharded state and the jitted step for a mesh),
`make_evaluate` (held-out evaluation), `pretrain` (the command) and `train_loop`, which runs the phases of
a length curriculum (`phases.py`) one after another. The run directory
(tokenizer, data, config.yaml) is `run_dir.py`'s; the state and its shardings are `state.py`'s.
Distillation (`distill.py`) runs through the same pieces with its own objective.
"""
from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import optax
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding, PartitionSpec

from electra_jax.checkpoint import Checkpointer
from electra_jax.config import Config, ConfigError
from electra_jax.data.loader import PretrainingData, batch_hash, held_out_batches
from electra_jax.data.prepare import read_metadata
from electra_jax.data.text_tokenizer import SpecialIds, load_text_tokenizer
from electra_jax.families import family_of, shown
from electra_jax.mesh import (activation_sharding, batch_sharding, logical_rules, make_mesh, platform_of,
                              replicated)
from electra_jax.metrics import MetricWriter, plot_metrics
from electra_jax.objectives.base import Objective
from electra_jax.phases import Phase, phase_of, run_phases
from electra_jax.precision import for_platform
from electra_jax.preemption import PreemptionWatch
from electra_jax.run_dir import check_inputs, held_out_split, hold_run_dir, record_config, special_ids, start_run
from electra_jax.state import TrainState, build_model, build_optimizer, state_shardings
from electra_jax.validation import validate, validate_platform


class NonFiniteLossError(RuntimeError):
    pass


# ---------------------------------------------------------------------------- the step

def micro_batches(whole: dict, accum: int, batch_sharding: NamedSharding) -> dict:
    """`whole`'s leaves (B, ...) as (accum, B / accum, ...), micro-batch i holding rows i, accum + i, 2 accum + i,
    ... Each device keeps its own rows: a device holding rows [d R, (d + 1) R) gives R / accum of them to every
    micro-batch, so a micro-step runs on every device's local rows / accum and no row moves between devices
    (a plain (accum, B / accum) reshape would put whole devices' rows into one micro-batch)."""
    micro_spec = NamedSharding(batch_sharding.mesh, PartitionSpec(None, *batch_sharding.spec))

    def split(x):
        strided = jnp.swapaxes(x.reshape(x.shape[0] // accum, accum, *x.shape[1:]), 0, 1)
        return jax.lax.with_sharding_constraint(strided, micro_spec)
    return jax.tree.map(split, whole)


def make_train_step(config: Config, objective: Objective, tx: optax.GradientTransformation,
                    schedule: optax.Schedule, batch_sharding: NamedSharding):
    """`train_step(state, batch, frozen=None) -> (state, metrics)`. `frozen` (a distillation teacher's
    parameters) reaches the objective's loss as an argument of the jitted step, never as a constant. The
    metrics carry the step's learning rate, so the loop never computes it on a device."""
    accum = config.train.grad_accum_steps
    base_rng = jax.random.key(config.train.seed + 1)

    def train_step(state: TrainState, batch: dict, frozen=None):
        with activation_sharding(batch_sharding.mesh, logical_rules(config)):  # activations split by rows
            return constrained_step(state, batch, frozen)

    def constrained_step(state: TrainState, batch: dict, frozen=None):
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
            def accumulate(carry, inputs):
                grads, sums = grad_fn(state.params, *inputs)
                return jax.tree.map(jnp.add, carry, (grads, sums)), None

            zeros = (jax.tree.map(jnp.zeros_like, state.params), objective.zero_sums())
            (grads, sums), _ = jax.lax.scan(accumulate, zeros,
                                            (micro_batches(whole, accum, batch_sharding), micro_rngs))
        updates, opt_state = tx.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        params = objective.keep_frozen(state.params, params)  # frozen parameters as they were, not p + 0
        metrics = objective.metrics(sums, counts)
        metrics["grad_norm"] = optax.tree.norm(grads)
        metrics["param_norm"] = optax.tree.norm(params)
        metrics["learning_rate"] = schedule(state.step)  # the rate this update used
        return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

    return train_step


# Held-out evaluation draws its masking and samples from this key folded with the batch index, whatever the
# run's seed or step: every evaluation of every run masks the same positions of the same examples.
EVAL_KEY_SEED = 20200323


def make_eval_step(config: Config, objective, batch_sharding: NamedSharding):
    """`eval_step(params, batch, index, frozen=None) -> (summable tree, counts)`: one held-out batch, no dropout."""
    def eval_step(params, batch, index, frozen=None):
        key = jax.random.fold_in(jax.random.key(EVAL_KEY_SEED), index)
        mask_rng, sample_rng, dropout_rng = jax.random.split(key, 3)
        with activation_sharding(batch_sharding.mesh, logical_rules(config)):
            whole, counts = objective.prepare((mask_rng, sample_rng), batch)
            return objective.evaluate(params, whole, jax.random.split(dropout_rng), counts, frozen), counts
    return eval_step


class Training(NamedTuple):
    model: Any  # the family's Flax module
    tx: optax.GradientTransformation
    schedule: optax.Schedule
    shardings: Any  # of the state
    abstract_state: Any  # ShapeDtypeStructs carrying those shardings: the target of a restore
    init: Any  # () -> freshly initialised, sharded state
    batch_sharding: Any
    step_fn: Any  # jitted (state, batch[, frozen]) -> (state, metrics); donates the state
    objective: Any
    eval_fn: Any  # jitted (params, batch, index[, frozen]) -> (summable tree, counts): held-out evaluation
    config: Config  # the run's config with model.dtype resolved for the mesh's platform (precision.py)


def setup_training(config: Config, mesh, specials: SpecialIds, word_starts_V=None, *, objective=None,
                   optimizer=None, frozen_shardings=None, platform: str | None = None) -> Training:
    """Model, optimizer, state shardings, a sharded initialiser and the jitted step for one mesh.
    `word_starts_V` (per token id: does it begin a word?) is ALBERT's, for whole-word masking. Distillation
    passes its objective, its (schedule, optimizer) and the shardings of the frozen teacher parameters that
    the step then takes as its third argument. `platform` ("cpu", "gpu"/"cuda", "tpu"; default: the mesh's) is
    what the step is compiled for: it resolves model.dtype=auto, and a step exported for another platform than
    the mesh's (jax.export) is built for that one."""
    device_kind = mesh.devices.flat[0].device_kind if platform in (None, platform_of(mesh)) else ""
    platform = platform or platform_of(mesh)
    config = for_platform(config, platform)  # model.dtype: auto -> bfloat16 on TPU/GPU, float32 on CPU
    validate_platform(config, platform, device_kind)
    model = build_model(config)
    objective = objective or family_of(config.model).objective(config, model, specials, word_starts_V)
    schedule, tx = optimizer or build_optimizer(config)
    shardings, abstract, make_state = state_shardings(config, model, tx, mesh)
    init = functools.partial(jax.jit(make_state, out_shardings=shardings), jax.random.key(config.train.seed))
    batch_spec = batch_sharding(mesh, logical_rules(config))
    frozen = () if frozen_shardings is None else (frozen_shardings,)
    step_fn = jax.jit(make_train_step(config, objective, tx, schedule, batch_spec), donate_argnums=0,
                      in_shardings=(shardings, batch_spec, *frozen), out_shardings=(shardings, replicated(mesh)))
    eval_fn = jax.jit(make_eval_step(config, objective, batch_spec), out_shardings=replicated(mesh),
                      in_shardings=(shardings.params, batch_spec, replicated(mesh), *frozen))
    return Training(model, tx, schedule, shardings, abstract, init, batch_spec, step_fn, objective, eval_fn,
                    config)


# ---------------------------------------------------------------------------- the loop

def _to_host(metrics) -> dict[str, float]:
    return {name: float(value) for name, value in jax.device_get(metrics).items()}


def _check_finite(step: int, values: dict[str, float], checkpointer: Checkpointer) -> None:
    bad = [name for name in ("loss", "grad_norm", "param_norm") if not math.isfinite(values[name])]
    if bad:
        checkpointer.wait()  # let an in-flight save of an earlier, good step finish intact
        latest = checkpointer.latest_step()
        kept = f"the last good checkpoint is step {latest}" if latest is not None else "no checkpoint yet"
        raise NonFiniteLossError(
            f"non-finite {', '.join(bad)} at step {step} (loss={values['loss']}); stopped without saving ({kept}). "
            f"Lower optimizer.learning_rate or check the data, then rerun to resume.")


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
    family = family_of(config.model)
    check_inputs(config)
    with hold_run_dir(run_dir, "pretrain"):
        config, data_folders, metadata, log = start_run(config, run_dir, log)
        mesh = make_mesh(config)
        word_starts = load_text_tokenizer(run_dir / "tokenizer").word_starts() if family.needs_word_starts(config) else None
        # One Training per phase: the same model, optimizer and state shardings; the objective (its masking
        # budget follows the length) and the jitted step of the phase's shapes (compiled when it first runs).
        trainings = [setup_training(phase.config, mesh, special_ids(metadata), word_starts)
                     for phase in run_phases(config)]
        return train_loop(config, run_dir, trainings, data_folders, trainings[0].init, log, progress)


ACCELERATOR_READ_THREADS = 8


def read_threads(config: Config, platform: str) -> int:
    """data.read_threads, with -1 resolved for the platform: none on a CPU, ACCELERATOR_READ_THREADS elsewhere."""
    if config.data.read_threads >= 0:
        return config.data.read_threads
    return 0 if platform == "cpu" else ACCELERATOR_READ_THREADS


def overlaps_steps(platform: str) -> bool:
    """Whether the loop dispatches step N + 1 before it reads step N's metrics, so that the device never waits
    for the host: everywhere but on a CPU. There a step's temporaries come from host malloc: with two steps in
    flight both sets are live and the heap that keeps freed memory (host_memory.py) fragments to about three
    times the step's working set, so the previous step is finished before the next is dispatched."""
    return platform != "cpu"


class _Leg(NamedTuple):
    """A phase as the loop runs it."""
    phase: Phase
    training: Training
    folder: Path  # its prepared data
    evaluate: Any  # params -> held-out metrics, or None


def train_loop(config: Config, run_dir: Path, trainings: Sequence[Training], data_folders: Sequence[Path], init,
               log=print, progress: bool = True, frozen=None) -> dict:
    """Resume from the newest checkpoint (or start from `init()`), run each phase's `training.step_fn(state,
    batch[, frozen])` on its data to train.steps with metrics one step late, held-out evaluation every
    train.eval_every steps and at each phase's end, checkpoints by policy, at each phase's end and on SIGTERM;
    returns a summary. `trainings` and `data_folders`: one per phase of `run_phases(config)`. `frozen`:
    parameters every step takes but does not train."""
    is_main = jax.process_index() == 0
    family = family_of(config.model)
    frozen_args = () if frozen is None else (frozen,)
    phases = run_phases(config)
    legs = []
    for phase, training, folder in zip(phases, trainings, data_folders, strict=True):
        # A bad held-out set fails here, before compiling; its batches have the phase's length and batch size.
        held_out = held_out_split(phase.config, folder, read_metadata(folder))
        evaluate = (make_evaluate(phase.config, training, held_out, frozen_args, log)
                    if held_out and config.train.eval_every else None)
        legs.append(_Leg(phase, training, folder, evaluate))
    threads = read_threads(config, platform_of(trainings[0].batch_sharding.mesh))

    def reader(phase: Phase) -> PretrainingData:
        return PretrainingData(data_folders[phase.index], phase.batch_size, config.data.seed, jax.process_index(),
                               jax.process_count(), threads)

    # Every phase's reader before any restore: data too small for a later phase's batch fails now, not after
    # the earlier phases have trained, and never reads as a checkpoint that does not restore.
    readers = [reader(phase) for phase in phases]
    checkpointer = Checkpointer(run_dir / "checkpoints", config.checkpoint)
    # A checkpoint holds the data position of the phase that ran its step (at a phase's last step, the next
    # phase then starts its data from the beginning).
    start, state, damaged = checkpointer.restore_newest(
        lambda step: checkpointer.restore(step, trainings[0].abstract_state, readers[phase_of(phases, step).index]),
        log)
    if damaged:  # a failed restore may have moved another phase's reader: only the restored one keeps its place
        restored = phase_of(phases, start or 0).index
        readers = [r if phase.index == restored else reader(phase) for phase, r in zip(phases, readers)]
    if jax.process_count() > 1:  # every process must stand at the same step
        multihost_utils.assert_equal(-1 if start is None else start, "electra-jax: processes resumed different steps")
    if damaged and is_main:
        checkpointer.set_aside(damaged, log)
    if start is not None:  # step 0 is an imported model
        log(f"resumed from step {start} in {run_dir / 'checkpoints'}")
    else:
        start, state = 0, init()
    record_config(config, run_dir)  # accepted: the checkpoints from here on are made with this config
    end = config.train.steps
    if config.train.stop_after:
        end = min(end, start + config.train.stop_after)
    leg = legs[phase_of(phases, start + 1).index]

    def begin(new_leg: _Leg) -> None:
        if new_leg.phase.named:
            log(new_leg.phase.describe(len(phases)) + f" from {new_leg.folder}")

    begin(leg)

    def next_batch():
        """The next global batch (from this host's slice), the digest of this host's input ids and the seconds
        the host spent reading it."""
        started = time.perf_counter()
        local = next(readers[leg.phase.index])
        batch = {name: jax.make_array_from_process_local_data(leg.training.batch_sharding, array)
                 for name, array in local.items()}
        digest = batch_hash({"input_ids": local["input_ids"]})
        return batch, digest, time.perf_counter() - started

    writer = MetricWriter(run_dir, enabled=is_main, resume_step=start)  # steps past `start` are logged anew
    bar = None
    if progress and is_main:
        from tqdm import tqdm
        bar = tqdm(total=end, initial=start, desc=family.trained_by(config), unit="step", mininterval=2.0, dynamic_ncols=True)
    pending = None  # (step, device metrics, digest, read seconds): fetched one step late so logging never
    #                 stalls the device
    last_values: dict[str, float] = {}
    window_tokens, window_start = 0.0, time.perf_counter()
    window_read, window_steps = 0.0, 0  # host seconds spent reading batches, over the steps of the log window

    def handle(step, metrics, digest, read_seconds, evaluated=None):
        nonlocal last_values, window_tokens, window_start, window_read, window_steps
        values = _to_host(metrics)
        _check_finite(step, values, checkpointer)
        values["batch_hash"] = digest
        window_tokens += values["tokens"]
        window_read, window_steps = window_read + read_seconds, window_steps + 1
        if evaluated:  # the eval seconds are not training time
            values.update(evaluated)
            window_start += evaluated["eval_seconds"]
        if step % config.train.log_every == 0 or step == end or evaluated:
            now = time.perf_counter()
            values["tokens_per_second"] = window_tokens / max(now - window_start, 1e-9)
            values["read_ms_per_step"] = 1000 * window_read / window_steps  # input time the device may wait on
            window_tokens, window_start, window_read, window_steps = 0.0, now, 0.0, 0
            writer.write(step, values)
            if bar is not None:
                headline = {name: f"{values[key]:.3f}" for name, key in shown(family.progress, values)}
                bar.set_postfix(loss=f"{values['loss']:.3f}", **headline,
                                tok_s=f"{values['tokens_per_second']:.0f}", refresh=False)
        last_values = values

    one_step_in_flight = not overlaps_steps(platform_of(leg.training.batch_sharding.mesh))  # where steps run
    preempted_at, stop_signal = None, None
    try:
        with PreemptionWatch() as watch:
            for step in range(start + 1, end + 1):
                if step > leg.phase.last:  # the next phase: its data, its shapes
                    leg = legs[leg.phase.index + 1]
                    begin(leg)
                batch, digest, read_seconds = next_batch()  # read while the device still runs the previous step
                if one_step_in_flight and pending is not None:
                    handle(*pending)
                    pending = None
                state, metrics = leg.training.step_fn(state, batch, *frozen_args)
                if pending is not None:
                    handle(*pending)
                pending = (step, metrics, digest, read_seconds)
                if bar is not None:
                    bar.update(1)
                preempted = watch.reached(step, checkpointer)  # every step: the multi-host protocol needs it
                phase_end = step == leg.phase.last
                due = leg.evaluate is not None and (step % config.train.eval_every == 0 or step == end or phase_end)
                evaluated = leg.evaluate(state.params) if due else None  # before the next step donates the state
                save = checkpointer.should_save(step) or preempted or step == end or phase_end
                if save or evaluated:
                    handle(*pending, evaluated)  # never save a state whose loss we have not seen to be finite
                    pending = None
                if save:
                    checkpointer.save(step, state, readers[leg.phase.index])
                if preempted:
                    preempted_at, stop_signal = step, watch.name
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
        log(f"stopped on {stop_signal}: saved step {preempted_at} in {run_dir / 'checkpoints'}; run the same command "
            f"again to resume")
    return {"run_dir": run_dir, "start_step": start, "end_step": preempted_at or end, "final": last_values,
            "preempted": preempted_at is not None, "signal": stop_signal,
            "checkpoints": run_dir / "checkpoints", "metrics": writer.path, "plot": plot,
            "tensorboard": run_dir / "tensorboard"}
