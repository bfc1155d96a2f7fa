"""Preemption and Ctrl-C: SIGTERM (what spot/preemptible VMs and schedulers send before they stop a job) and
SIGINT make the trainer finish the step, save and return; a second Ctrl-C exits at once, without saving.

With several processes, JAX's own preemption service (started by `jax.distributed.initialize`) catches
SIGTERM and agrees a step on which every process saves; Orbax's `CheckpointManager.should_save` asks it.
A single process has no such service, so a Python handler records the signal instead. (Ctrl-C reaches the
processes of one host only, so a multi-process run leaves SIGINT as Python's KeyboardInterrupt: no save.)
"""
from __future__ import annotations

import os
import signal
import sys
import threading

import jax

EXIT_CODES = {signal.SIGTERM: 128 + signal.SIGTERM, signal.SIGINT: 128 + signal.SIGINT}  # stopped, saved, not done


class PreemptionWatch:
    def __init__(self):
        self.signalled = threading.Event()
        self.signal: int | None = None  # the first signal received
        self._previous: dict[int, object] = {}

    def __enter__(self):
        single = jax.process_count() == 1
        if single and threading.current_thread() is threading.main_thread():
            for signum in EXIT_CODES:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum, _frame) -> None:
        if self.signalled.is_set():
            if signum == signal.SIGINT:  # a second Ctrl-C: the user will not wait for the save
                print(f"\ninterrupted again: exiting now without saving (a save in flight is left unfinished; the "
                      f"newest finished checkpoint stays)", file=sys.stderr, flush=True)
                os._exit(EXIT_CODES[signal.SIGINT])
            return  # a repeated SIGTERM: the save is already coming
        self.signal = signum
        self.signalled.set()
        if signum == signal.SIGINT:
            print("\ninterrupted: finishing this step and saving (Ctrl-C again to exit at once)", file=sys.stderr,
                  flush=True)

    def __exit__(self, *exc):
        for signum, previous in self._previous.items():
            signal.signal(signum, previous)
        return False

    @property
    def name(self) -> str:
        return signal.Signals(self.signal).name if self.signal else "SIGTERM"

    def reached(self, step: int, checkpointer) -> bool:
        """Whether to save at `step` and stop. Call it at every step: the multi-process protocol needs that."""
        return self.signalled.is_set() or checkpointer.reached_preemption(step)
