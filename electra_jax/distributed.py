"""Joining a multi-process run: JAX's own runtime (`jax.distributed.initialize`), nothing home-made.

On a TPU VM slice (and under SLURM or Open MPI) JAX finds the coordinator, the process count and this
process's id by itself (`--multihost`). On GPU clusters and for several local CPU processes they are given
(`--coordinator HOST:PORT --num-processes N --process-id I`). CPU processes exchange collectives through
gloo. Must run before anything touches a JAX device.
"""
from __future__ import annotations


class DistributedError(ValueError):
    """Inconsistent multi-process flags: one line naming the fix."""


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None,
               auto: bool = False) -> bool:
    """Joins the run when asked to; returns whether this is a multi-process run."""
    explicit = [coordinator is not None, num_processes is not None, process_id is not None]
    if not auto and not any(explicit):
        return False
    if any(explicit) and not all(explicit):
        raise DistributedError("pretrain: give all of --coordinator HOST:PORT, --num-processes N and --process-id I "
                               "(or --multihost alone, where JAX finds them: TPU VMs, SLURM, Open MPI)")
    if num_processes is not None and not 0 <= process_id < num_processes:
        raise DistributedError(f"pretrain: --process-id {process_id} must be in [0, {num_processes})")
    import jax
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU processes; no effect on TPU/GPU
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True
