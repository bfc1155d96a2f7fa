"""Learning-rate schedules, AdamW or LAMB with a decay mask, and gradient clipping."""
from __future__ import annotations

import re

import jax
import jax.numpy as jnp
import optax

from electra_jax.config import OptimizerConfig, ScheduleConfig

NO_DECAY_NAMES = ("bias", "scale", "generator_lm_head_bias", "predictions_bias")  # biases and LayerNorm parameters


def _segment(kind: str, peak: float, end: float, warmup: int, length: int, power: float) -> optax.Schedule:
    """One warmup + decay period of `length` steps, counted from 0."""
    if kind == "bert":
        # google-research/bert and albert: linear warmup to the peak, then the decay over the whole period
        # counted from 0 (so it starts below the peak at the end of warmup).
        decay = optax.polynomial_schedule(peak, end, power, length)
        return lambda step: jnp.where(step < warmup, peak * step / max(warmup, 1), decay(step))
    if kind == "electra":
        # google-research/electra: polynomial decay over the whole period, warmup multiplied in.
        decay = optax.polynomial_schedule(peak, end, power, length)
        return lambda step: decay(step) * jnp.minimum(1.0, step / max(warmup, 1))
    decay_power = 1.0 if kind == "linear" else power
    decay = optax.polynomial_schedule(peak, end, decay_power, length - warmup)
    if warmup == 0:
        return decay
    return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup), decay], [warmup])


def make_schedule(schedule: ScheduleConfig, peak_lr: float, total_steps: int) -> optax.Schedule:
    """Warmup + decay; at each step in `schedule.restarts` the same shape starts over."""
    bounds = [0, *schedule.restarts, total_steps]
    segments = [_segment(schedule.kind, peak_lr, schedule.end_learning_rate, schedule.warmup_steps,
                         stop - start, schedule.power) for start, stop in zip(bounds, bounds[1:])]
    return optax.join_schedules(segments, bounds[1:-1]) if len(segments) > 1 else segments[0]


def decay_mask(params):
    """True for parameters that get weight decay: everything but biases and LayerNorm."""
    def decays(path, _):
        # Only dict keys name parameters; boxed (Partitioned) trees add an attribute key after them.
        names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        return not (names[-1] in NO_DECAY_NAMES or any("LayerNorm" in n for n in names))
    return jax.tree_util.tree_map_with_path(decays, params)


def scale_by_adam(b1: float, b2: float, eps: float, bias_correction: bool) -> optax.GradientTransformation:
    """Adam's m / (sqrt(v) + eps). Without bias correction it is google-research's AdamWeightDecayOptimizer (BERT,
    ELECTRA) and LAMB (ALBERT), which divide the raw moments: a run continued from their checkpoints takes the
    update theirs would have. The state is optax's ScaleByAdamState either way, so checkpoints do not change."""
    corrected = optax.scale_by_adam(b1=b1, b2=b2, eps=eps)
    if bias_correction:
        return corrected

    def update(grads, state, params=None):
        del params
        mu = optax.tree.update_moment(grads, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(grads, state.nu, b2, 2)
        updates = jax.tree.map(lambda m, v: m / (jnp.sqrt(v) + eps), mu, nu)
        return updates, optax.ScaleByAdamState(count=optax.safe_increment(state.count), mu=mu, nu=nu)
    return optax.GradientTransformation(corrected.init, update)


def scale_by_trust_ratio(mask) -> optax.GradientTransformation:
    """LAMB's per-tensor |w| / |update| for the tensors `mask(params)` marks; the others (biases, LayerNorm)
    keep their update, as albert's lamb_optimizer.py leaves them out of the layer adaptation. optax's state."""
    inner = optax.scale_by_trust_ratio()

    def update(updates, state, params=None):
        scaled, state = inner.update(updates, state, params)
        return jax.tree.map(lambda s, u, adapt: s if adapt else u, scaled, updates, mask(params)), state
    return optax.GradientTransformation(inner.init, update)


def make_optimizer(config: OptimizerConfig, schedule: optax.Schedule) -> optax.GradientTransformation:
    """AdamW or LAMB (ALBERT's: AdamW's step scaled per weight tensor by the trust ratio |w| / |step|), the
    chains of optax.adamw and optax.lamb with `scale_by_adam` in front; clipping by global norm first."""
    parts = [scale_by_adam(config.b1, config.b2, config.eps, config.bias_correction),
             optax.add_decayed_weights(config.weight_decay, mask=decay_mask)]
    if config.kind == "lamb":
        parts.append(scale_by_trust_ratio(decay_mask))
    optimizer = optax.chain(*parts, optax.scale_by_learning_rate(schedule))
    if config.clip_norm > 0:
        return optax.chain(optax.clip_by_global_norm(config.clip_norm), optimizer)
    return optimizer


def with_adam_moments(opt_state, mu, nu, step: int):
    """`opt_state` with Adam's moments set to `mu` and `nu` and every step counter (Adam's, the schedule's) at
    `step`: the optimizer state of a run that has taken `step` steps (an imported TF1 run)."""
    return optax.tree_utils.tree_set(opt_state, mu=jax.tree.map(jnp.asarray, mu), nu=jax.tree.map(jnp.asarray, nu),
                                     count=jnp.asarray(step, jnp.int32))


EMBEDDING_NAMES = ("embeddings", "embeddings_project", "embedding_hidden_mapping_in")
LAYER_NAME = re.compile(r"layer_(\d+)|group_(\d+)_layer_\d+")  # ALBERT: a group of shared blocks is one layer


def layerwise_multipliers(params, num_layers: int, decay: float):
    """Learning-rate multipliers for fine-tuning: the task head 1, the top encoder layer `decay`, the one
    below decay^2, ..., layer_i decay^(L - i), the embeddings decay^(L + 1). (google-research/electra's code
    gives the top layer decay^2, an off-by-one left from a removed pooler, its issue #51.) For ALBERT pass the
    number of groups: group g of G is a layer."""
    def multiplier(path, _):
        names = [p.key for p in path if isinstance(p, jax.tree_util.DictKey)]
        for name in names:
            layer = LAYER_NAME.fullmatch(name)
            if layer:
                return decay ** (num_layers - int(layer[1] or layer[2]))
            if name in EMBEDDING_NAMES:
                return decay ** (num_layers + 1)
        return 1.0
    return jax.tree_util.tree_map_with_path(multiplier, params)


def scale_by_multipliers(multipliers) -> optax.GradientTransformation:
    """Multiplies each update by its parameter's multiplier: with AdamW's decoupled weight decay (scaled by the
    learning rate too) this is exactly a per-parameter learning rate."""
    def update(updates, state, params=None):
        del params
        return jax.tree.map(lambda u, m: u * m, updates, multipliers), state
    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)
