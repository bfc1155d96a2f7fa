"""Orbax checkpoints of the train state and the data iterator, with resume from the latest."""
from __future__ import annotations

from pathlib import Path

import grain
import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from electra_jax.config import CheckpointConfig


class Checkpointer:
    def __init__(self, directory: str | Path, config: CheckpointConfig, read_only: bool = False):
        self.config = config
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

    def save(self, step: int, state, data=None) -> None:
        """The state and, for training runs, the data iterator (a `PretrainingData`) with its spec."""
        items = {"state": ocp.args.StandardSave(state)}
        if data is not None:
            items.update(data=grain.checkpoint.CheckpointSave(data.saved_state()),
                         data_spec=ocp.args.JsonSave(data.spec))
        self.manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, step: int, abstract_state, data=None):
        """Restore onto the shardings carried by `abstract_state` (ShapeDtypeStructs with .sharding); moves
        `data` to where it stood at `step` (a checkpoint without data, such as an import, leaves it at the start)."""
        items = {"state": ocp.args.StandardRestore(abstract_state)}
        with_data = data is not None and (self.directory / str(step) / "data").is_dir()
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
        raise ValueError(f"resume: checkpoint {step} was written for other data or batching ({'; '.join(changed)}); "
                         f"keep data.prepared, data.seed and train.batch_size as they were, or start a new run "
                         f"directory")
