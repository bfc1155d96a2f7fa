"""Preemption: SIGTERM (what spot/preemptible VMs and schedulers send before they stop a job) makes the
trainer save at the next step boundary and return.

With several processes, JAX's own preemption service (started by `jax.distributed.initialize`) catches the
signal and agrees a step on which every process saves; Orbax's `CheckpointManager.should_save` asks it.
A single process has no such service, so a Python handler records the signal instead.
"""
from __future__ import annotations

import signal
import threading

import jax

EXIT_CODE = 128 + signal.SIGTERM  # the run stopped on SIGTERM, saved, and is not finished


class PreemptionWatch:
    def __init__(self):
        self.signalled = threading.Event()
        self._previous = None

    def __enter__(self):
        single = jax.process_count() == 1
        if single and threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, lambda *_: self.signalled.set())
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)
        return False

    def reached(self, step: int, checkpointer) -> bool:
        """Whether to save at `step` and stop. Call it at every step: the multi-process protocol needs that."""
        return self.signalled.is_set() or checkpointer.reached_preemption(step)
