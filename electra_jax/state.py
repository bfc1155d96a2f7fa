"""The training state: the family's model, the optimizer, and the abstract, sharded state built from them.

`state_shardings` follows flax's abstract init: `jax.eval_shape(init)` -> logical partition specs -> mesh
shardings, so `jax.jit(init, out_shardings=shardings)` creates every parameter directly in its shards.
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax import struct

from electra_jax.checkpoint import abstract_with_shardings
from electra_jax.config import Config, MeshConfig
from electra_jax.families import family_of
from electra_jax.mesh import logical_rules, make_mesh
from electra_jax.optim import make_optimizer, make_schedule
from electra_jax.phases import run_phases


@struct.dataclass
class TrainState:
    step: jax.Array
    params: Any
    opt_state: Any


def build_model(config: Config) -> nn.Module:
    """The Flax module of the run's family (ELECTRA's generator + discriminator, ALBERT, BERT)."""
    return family_of(config.model).build(config)


def _dummy_inputs(config: Config):
    config = run_phases(config)[0].config  # with train.phases the run's own data.seq_len is not read
    ids = jnp.zeros((1, config.data.seq_len), jnp.int32)
    return ids, ids, jnp.ones_like(ids), jnp.zeros((1, config.max_predictions), jnp.int32)


def state_shardings(config: Config, model: nn.Module, tx: optax.GradientTransformation, mesh):
    """Abstract init -> logical partition specs -> mesh shardings. Returns the shardings, the abstract state
    carrying them (the target of a restore) and the function that builds the state.

    `jax.jit(init, out_shardings=shardings)(rng)` then creates each parameter directly in its shards:
    full-size parameters never materialise on one device.
    """
    boxed_abstract = boxed_abstract_state(config, model, tx)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(boxed_abstract), mesh, logical_rules(config))
    abstract = abstract_with_shardings(nn.unbox(boxed_abstract), shardings)
    return shardings, abstract, lambda rng: nn.unbox(_boxed_state(config, model, tx, rng))


def _boxed_state(config: Config, model: nn.Module, tx: optax.GradientTransformation, rng) -> TrainState:
    """A fresh state whose arrays are boxed with their logical axis names."""
    params = model.init({"params": rng}, *_dummy_inputs(config))["params"]
    return TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))


def boxed_abstract_state(config: Config, model: nn.Module, tx: optax.GradientTransformation) -> TrainState:
    """The state's shapes and dtypes, boxed with logical axis names: nothing is allocated."""
    return jax.eval_shape(functools.partial(_boxed_state, config, model, tx), jax.random.key(0))


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
