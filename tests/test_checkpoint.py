"""When the trainer saves: every `checkpoint.every_steps`, and with `checkpoint.every_minutes` also once that
much time has passed since the last save (Orbax's save-decision policies)."""
import time

import jax.numpy as jnp

from electra_jax.checkpoint import Checkpointer
from electra_jax.config import CheckpointConfig


def _saves(checkpointer, steps, pause=0.0):
    saved = []
    for step in steps:
        if checkpointer.should_save(step):
            checkpointer.save(step, {"w": jnp.full((2,), float(step))})
            saved.append(step)
        time.sleep(pause)
    return saved


def test_step_interval_only(tmp_path):
    checkpointer = Checkpointer(tmp_path / "c", CheckpointConfig(every_steps=5, async_save=False))
    assert _saves(checkpointer, range(1, 13)) == [5, 10]
    checkpointer.close()


def test_time_interval_adds_saves_between_step_intervals(tmp_path):
    config = CheckpointConfig(every_steps=1000, every_minutes=1 / 60, async_save=False, keep=10)  # one second
    checkpointer = Checkpointer(tmp_path / "c", config)
    assert _saves(checkpointer, [1]) == [1]  # no checkpoint yet: the time policy saves at once
    assert _saves(checkpointer, [2, 3]) == []  # within the second
    time.sleep(1.1)
    assert _saves(checkpointer, [4, 5]) == [4]
    assert _saves(checkpointer, [1000]) == [1000]
    checkpointer.close()
