"""Mixed precision: what `model.dtype` computes in on each platform.

The policy of MaxText and Levanter: parameters, optimizer state and gradients stay in `model.param_dtype`
(float32); matmuls and the activations between them run in the compute dtype; softmax, LayerNorm statistics,
logits and losses are float32 whatever it is (`models/layers.py` and the objectives cast there).

`model.dtype: auto` is bfloat16 on TPUs and GPUs, whose matrix units run it at full rate and whose memory
holds twice the activations, and float32 on a CPU, where bfloat16 matmuls are no faster.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from electra_jax.config import Config, ModelConfig

ACCELERATOR_DTYPE = "bfloat16"


def compute_dtype_name(dtype: str, platform: str) -> str:
    """`model.dtype` resolved for a platform ("cpu", "gpu"/"cuda", "tpu")."""
    if dtype != "auto":
        return dtype
    return "float32" if platform == "cpu" else ACCELERATOR_DTYPE


def for_platform(config: Config, platform: str) -> Config:
    """`config` with `model.dtype` resolved for the platform its step is compiled for."""
    resolved = compute_dtype_name(config.model.dtype, platform)
    return dataclasses.replace(config, model=dataclasses.replace(config.model, dtype=resolved))


def compute_dtype(model: ModelConfig) -> jnp.dtype:
    """The compute dtype of a model config. "auto" left unresolved (a module built outside the trainer, e.g.
    by fine-tuning or export) follows this process's default backend."""
    return jnp.dtype(compute_dtype_name(model.dtype, jax.default_backend()))
