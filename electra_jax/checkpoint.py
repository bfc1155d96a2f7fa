"""Orbax checkpoints of the train state and the data position, with resume from the latest."""
from __future__ import annotations

from pathlib import Path

import jax
import orbax.checkpoint as ocp

from electra_jax.config import CheckpointConfig


class Checkpointer:
    def __init__(self, directory: str | Path, config: CheckpointConfig, read_only: bool = False):
        self.config = config
        options = ocp.CheckpointManagerOptions(max_to_keep=config.keep, create=not read_only, read_only=read_only,
                                               enable_async_checkpointing=config.async_save and not read_only)
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        """Finished checkpoints, oldest first (a save still being written is not listed)."""
        return sorted(self.manager.all_steps())

    def save(self, step: int, state, data_state: dict) -> None:
        self.manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                        data=ocp.args.JsonSave(data_state)), force=True)

    def restore(self, step: int, abstract_state):
        """Restore onto the shardings carried by `abstract_state` (ShapeDtypeStructs with .sharding)."""
        restored = self.manager.restore(step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state), data=ocp.args.JsonRestore()))
        return restored["state"], restored["data"]

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
