"""Orbax checkpoints of the train state and the data iterator, with resume from the newest one that restores.

A damaged checkpoint (a truncated file, a deleted folder, a bad metadata file) is passed over with one
warning for the one before it; it is never deleted. The trainer, which holds the run directory, moves it
out of the way (RUN_DIR/checkpoints.damaged/STEP) so the step can be saved again; readers (export,
fine-tuning) only pass it over.
"""
from __future__ import annotations

import logging
import os
import shutil
import sys
from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from electra_jax.config import CheckpointConfig, ConfigError

DAMAGED = "checkpoints.damaged"  # beside checkpoints/: where the trainer moves what does not restore


class DataSpecChanged(ConfigError):
    """The checkpoint's data position counts batches of other data or batching: not damage."""


class NoIntactCheckpoint(ConfigError):
    pass


def failure_reason(err: BaseException) -> str:
    """An exception as a short phrase: the first line of its innermost cause (orbax wraps TensorStore's
    precise "byte range not valid" in a generic message)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    first = (str(err).strip().splitlines() or [""])[0]
    return f"{type(err).__name__}: {first[:300]}" if first else type(err).__name__


class _ReadOnlyNotice(logging.Filter):
    """Orbax warns of a read-only manager's directory and options on every read; reading is all a reader
    means to do."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(("Given directory is read only",
                                                   "CheckpointManagerOptions.read_only=True"))


_READ_ONLY_NOTICE = _ReadOnlyNotice()


def _quiet_abandoned_reads() -> None:
    """A restore that fails leaves TensorStore reads in flight: their callbacks post to the closed asyncio loop
    of that restore ("Event loop is closed", from TensorStore's threads through sys.excepthook) and their
    coroutines die with the read error (sys.unraisablehook, asyncio's logger): hundreds of tracebacks. Those,
    and only those, are dropped. Installed before the first read, since the first callbacks fire while the
    failed restore is still unwinding."""
    previous = sys.unraisablehook
    if getattr(previous, "electra_jax_filter", False):
        return

    def hook(unraisable):
        value, code = unraisable.exc_value, getattr(unraisable.object, "cr_code", None)
        if isinstance(value, RuntimeError) and str(value) == "Event loop is closed":
            return
        if code is not None and f"{os.sep}orbax{os.sep}" in code.co_filename:  # an abandoned orbax read
            return
        previous(unraisable)

    hook.electra_jax_filter = True
    sys.unraisablehook = hook
    previous_excepthook = sys.excepthook

    def excepthook(kind, value, trace):  # the same callbacks, when run from a TensorStore thread
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous_excepthook(kind, value, trace)

    sys.excepthook = excepthook
    logging.getLogger("asyncio").addFilter(_AbandonedOrbaxTask())


class _AbandonedOrbaxTask(logging.Filter):
    """asyncio's "Task exception was never retrieved" for an orbax read task of a restore that failed (it is
    logged when the task is collected, often at exit)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not (message.startswith("Task exception was never retrieved") and f"{os.sep}orbax{os.sep}" in message)


class Checkpointer:
    def __init__(self, directory: str | Path, config: CheckpointConfig, read_only: bool = False):
        self.config = config
        if read_only and _READ_ONLY_NOTICE not in logging.getLogger("absl").filters:
            logging.getLogger("absl").addFilter(_READ_ONLY_NOTICE)
        policies = [checkpoint_managers.FixedIntervalPolicy(config.every_steps),
                    checkpoint_managers.PreemptionCheckpointingPolicy()]
        if config.every_minutes:  # decided on the primary host and broadcast, so all hosts save together
            policies.append(checkpoint_managers.ContinuousCheckpointingPolicy(
                minimum_interval_secs=max(1, round(config.every_minutes * 60))))
        options = ocp.CheckpointManagerOptions(max_to_keep=config.keep, create=not read_only, read_only=read_only,
                                               enable_async_checkpointing=config.async_save and not read_only,
                                               save_decision_policy=checkpoint_managers.AnySavePolicy(policies))
        self.directory = Path(directory).absolute()
        self.manager = ocp.CheckpointManager(self.directory, options=options)

    def should_save(self, step: int) -> bool:
        """Every `every_steps` steps, every `every_minutes`, or at a preemption sync point."""
        return self.manager.should_save(step)

    def reached_preemption(self, step: int) -> bool:
        """All processes agreed to stop at `step` (JAX's preemption service; always False for one process)."""
        return self.manager.reached_preemption(step)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Finished checkpoints, oldest first (a save still being written is not listed)."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, data=None, imported_from: str | None = None) -> None:
        """The state and, for training runs, the data iterator (a `PretrainingData`) with its spec. An imported
        run's checkpoint names its source instead (`imported/`): it has no data position at any step."""
        items = {"state": ocp.args.StandardSave(state)}
        if imported_from is not None:
            items["imported"] = ocp.args.JsonSave({"source": imported_from})
        if data is not None:
            items.update(data=grain.checkpoint.CheckpointSave(data.saved_state()),
                         data_spec=ocp.args.JsonSave(data.spec))
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state, data=None):
        """Restore onto the shardings carried by `abstract_state` (ShapeDtypeStructs with .sharding); moves
        `data` to where it stood at `step` (a checkpoint without data, such as an import, leaves it at the start)."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        with_data = data is not None and (self.directory / str(step) / "data").is_dir()
        imported = step == 0 or (self.directory / str(step) / "imported").is_dir()
        if data is not None and not imported and not with_data:  # only an import has no data position
            raise FileNotFoundError(f"checkpoint {step} has no data/ folder (the data position)")
        if with_data:
            saved = self.manager.restore(step, args=ocp.args.Composite(data_spec=ocp.args.JsonRestore()))
            _check_data_spec(saved["data_spec"], data.spec, step)
            items["data"] = grain.checkpoint.CheckpointRestore(data.iterator)
        return self.manager.restore(step, args=ocp.args.Composite(**items))["state"]

    def restore_params(self, step: int, abstract_params):
        """Only the parameters: the optimizer state is not read."""
        item = {"params": abstract_params}
        restored = self.manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
            item=item, restore_args=ocp.checkpoint_utils.construct_restore_args(item), partial_restore=True)))
        return restored["state"]["params"]

    def restore_newest(self, restore, log=print, steps: list[int] | None = None):
        """(step, restore(step), steps that failed) for the newest of `steps` (default: every finished one)
        that restores; (None, None, []) when there is none. Fails in one line when none of them restores."""
        steps = self.all_steps() if steps is None else steps
        failed: list[tuple[int, str]] = []
        if steps:
            _quiet_abandoned_reads()
        for step in reversed(steps):
            try:
                return step, restore(step), [s for s, _ in failed]
            except DataSpecChanged:
                raise
            except Exception as err:  # orbax, tensorstore and grain raise many kinds for a damaged file
                failed.append((step, failure_reason(err)))
                older = [s for s in steps if s < step]
                log(f"warning: checkpoint {step} in {self.directory} does not restore ({failed[-1][1]}); left on "
                    f"disk; {f'using step {older[-1]}' if older else 'no older checkpoint'}")
        if failed:
            raise NoIntactCheckpoint(
                f"no intact checkpoint in {self.directory}: step(s) {', '.join(str(s) for s, _ in failed)} do not "
                f"restore (step {failed[0][0]}: {failed[0][1]}); if the model or optimizer settings changed since "
                f"they were written, give the old ones, otherwise start a new run directory")
        return None, None, []

    def set_aside(self, steps: list[int], log=print) -> None:
        """Move damaged checkpoints to checkpoints.damaged/ (kept, never deleted), so their steps can be saved
        again. Only the run directory's lock holder (the trainer, on process 0) calls it."""
        aside = self.directory.parent / DAMAGED
        aside.mkdir(exist_ok=True)
        for step in steps:
            target = aside / str(step)
            n = 1
            while target.exists():
                target, n = aside / f"{step}.{n}", n + 1
            shutil.move(str(self.directory / str(step)), target)
            log(f"moved the damaged checkpoint {step} to {target}")
        self.manager.reload()

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def abstract_with_shardings(abstract_tree, shardings):
    return jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract_tree, shardings)


def _check_data_spec(saved: dict, current: dict, step: int) -> None:
    """The saved iterator counts batches: resuming with another seed, batch, host count or data would
    silently read other examples."""
    changed = [f"{key} {saved.get(key)} -> {current[key]}" for key in current if saved.get(key) != current[key]]
    if changed:
        raise DataSpecChanged(f"resume: checkpoint {step} was written for other data or batching ({'; '.join(changed)}); "
                         f"keep data.prepared, data.seed and train.batch_size (in a curriculum: each phase's "
                         f"prepared and batch_size) as they were, or start a new run directory")
