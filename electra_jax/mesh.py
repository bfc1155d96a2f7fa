"""Device mesh (data, fsdp, tensor) and the logical-axis rules that map parameters onto it."""
from __future__ import annotations

import contextlib
import contextvars

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from electra_jax.config import Config
from electra_jax.validation import mesh_shape


AXES = ("data", "fsdp", "tensor")


def make_mesh(config: Config, devices=None) -> Mesh:
    devices = list(jax.devices() if devices is None else devices)
    shape = mesh_shape(config, len(devices))
    try:
        from jax.experimental import mesh_utils
        grid = mesh_utils.create_device_mesh(shape, devices=devices)
    except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)
    # Auto axes: classic GSPMD propagation from the in/out shardings we pass to jit.
    return Mesh(grid, AXES, axis_types=(AxisType.Auto,) * len(AXES))


def logical_rules(config: Config) -> tuple[tuple[str, object], ...]:
    return tuple((name, tuple(axes) if isinstance(axes, list) else axes)
                 for name, axes in config.mesh.logical_axis_rules)


def batch_sharding(mesh: Mesh, rules) -> NamedSharding:
    """Leading (batch) axis split over the data axes, everything else replicated."""
    axes = dict(rules).get("batch")
    return NamedSharding(mesh, PartitionSpec(axes))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def platform_of(mesh: Mesh) -> str:
    """The platform ("cpu", "gpu", "tpu") of the mesh's devices: what a step on it is compiled for."""
    return mesh.devices.flat[0].platform


# ---------------------------------------------------------------------------- activations

# (mesh, logical rules) while a step is traced: `constrain` then pins activations to the batch split. Without
# such constraints XLA's propagation lets the fsdp split of a weight's hidden axis leak into the activations,
# which then move between devices in all-to-alls at every layer.
_ACTIVATION_MESH: contextvars.ContextVar = contextvars.ContextVar("activation_mesh", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh, rules):
    """Trace the code inside with `constrain` active on `mesh` under the logical `rules`."""
    token = _ACTIVATION_MESH.set((mesh, rules))
    try:
        yield
    finally:
        _ACTIVATION_MESH.reset(token)


def constrain(x, logical_axes: tuple[str | None, ...]):
    """`x` constrained to the mesh axes its logical axes map to (e.g. ("batch", None, None): rows over the
    data axes, the rest whole on each device); `x` itself outside `activation_sharding`."""
    active = _ACTIVATION_MESH.get()
    if active is None:
        return x
    mesh, rules = active
    import flax.linen as nn
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, nn.logical_to_mesh_axes(logical_axes, rules)))


def active_mesh():
    """(mesh, the mesh axes of the batch's rows) while a step is traced under `activation_sharding`, else None:
    for code that must place itself on the mesh (a Pallas kernel inside `jax.shard_map`)."""
    active = _ACTIVATION_MESH.get()
    if active is None:
        return None
    mesh, rules = active
    import flax.linen as nn
    return mesh, nn.logical_to_mesh_axes(("batch",), rules)[0]
