"""What every pretraining objective provides to the step of `train.py`, which does the rest (random keys,
gradient accumulation, the update) the same way for all.

`prepare` masks on device for the whole batch, so that micro-batches share one normalisation (`Counts`);
`loss` runs one micro-batch and returns its loss and summable `Sums`; `metrics` divides summed `Sums` by the
counts. Held-out evaluation reuses `loss` without dropout unless an objective adds to it (ELECTRA's AUC).
"""
from __future__ import annotations

import abc
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp


class Counts(NamedTuple):
    """Global counts of the whole (accumulated) batch; every micro-batch's sums are divided by these, so
    accumulation equals one big batch."""
    predictions: jax.Array  # masked positions with a label (at least 1)
    tokens: jax.Array  # real, non-padding tokens (at least 1)
    sequences: jax.Array


class Objective(abc.ABC):
    """The interface of an objective. `Sums` is the NamedTuple of its per-batch sums (all float32 scalars
    or summable arrays); `frozen` is a tree of parameters the step takes but does not train (a teacher's)."""
    Sums: type

    @abc.abstractmethod
    def prepare(self, keys: tuple[jax.Array, jax.Array], batch: dict) -> tuple[dict, Counts]:
        """(per-example inputs of the whole batch, its global counts) from two keys (masking, sampling)."""

    @abc.abstractmethod
    def loss(self, params, micro: dict, keys, counts: Counts, frozen: Any = None,
             deterministic: bool = False) -> tuple[jax.Array, NamedTuple]:
        """(loss, sums) of one micro-batch; `keys` are its two dropout keys."""

    @abc.abstractmethod
    def metrics(self, sums, counts: Counts) -> dict:
        """Named values of summed sums, including "loss" and "tokens"."""

    def zero_sums(self):
        return self.Sums(*[jnp.zeros((), jnp.float32)] * len(self.Sums._fields))

    def evaluate(self, params, whole: dict, keys, counts: Counts, frozen: Any = None):
        """A summable tree for one held-out batch, without dropout."""
        return self.loss(params, whole, keys, counts, frozen, deterministic=True)[1]

    def eval_metrics(self, total, counts: Counts) -> dict:
        """Named values of `evaluate`'s trees summed over the held-out batches (on the host)."""
        return self.metrics(total, counts)

    def keep_frozen(self, old_params, new_params):
        """The parameters after an update, with any that must not move carried over from `old_params`."""
        return new_params


def real_tokens(input_ids_BxL, pad_id: int):
    """(attention mask B x L int32, count of real tokens, at least 1)."""
    attention_mask_BxL = (input_ids_BxL != pad_id).astype(jnp.int32)
    return attention_mask_BxL, jnp.maximum(attention_mask_BxL.sum().astype(jnp.float32), 1.0)


def cross_entropy_and_hit(logits_BxPxV, labels_BxP):
    """Softmax cross-entropy and whether the label has the top logit, from one max and one pass of
    exponentials (an argmax would be a second pass over the B x P x V logits; this compare is free).
    A label tied for the top logit counts as a hit."""
    max_BxPx1 = jax.lax.stop_gradient(logits_BxPxV.max(-1, keepdims=True))
    shifted_BxPxV = logits_BxPxV - max_BxPx1
    label_shifted_BxP = jnp.take_along_axis(shifted_BxPxV, labels_BxP[..., None], -1)[..., 0]
    loss_BxP = jnp.log(jnp.exp(shifted_BxPxV).sum(-1)) - label_shifted_BxP
    return loss_BxP, label_shifted_BxP >= 0
