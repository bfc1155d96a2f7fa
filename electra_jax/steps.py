"""What one pretraining step computes, per architecture; `train.make_train_step` does the rest (random keys,
gradient accumulation, the update) the same way for all.

Each objective has `prepare(keys, batch) -> (per-example inputs, global counts)`: masking on device, for the
whole batch, so micro-batches share one normalisation; `loss(params, micro, keys, counts, frozen,
deterministic=False) -> (loss, sums)` for one micro-batch (`frozen`: parameters the step takes but does not
train, such as a teacher's); `zero_sums()`; `metrics(sums, counts)`; and for held-out evaluation
`evaluate(params, whole, keys, counts, frozen) -> summable tree` (no dropout) with `eval_metrics(total, counts)`
on the host, over the sums of every eval batch (`HeldOut` gives the last two to any objective).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from electra_jax import objectives
from electra_jax.config import Config
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.models.electra import Electra


def _maskable(input_ids, specials: SpecialIds):
    return ((input_ids != specials.pad) & (input_ids != specials.cls) & (input_ids != specials.sep)
            & (input_ids != specials.mask))


def _zeros(sums_class):
    return sums_class(*[jnp.zeros((), jnp.float32)] * len(sums_class._fields))


class HeldOut:
    """Held-out evaluation from the objective's own loss sums and metrics, without dropout."""

    def evaluate(self, params, whole, keys, counts, frozen=None):
        return self.loss(params, whole, keys, counts, frozen, deterministic=True)[1]

    def eval_metrics(self, total, counts) -> dict:
        return self.metrics(total, counts)


class ElectraObjective(HeldOut):
    """Generator MLM + 50 x replaced-token detection (see `objectives`)."""

    def __init__(self, config: Config, model, specials: SpecialIds):
        self.config, self.model, self.specials = config, model, specials

    def prepare(self, keys, batch):
        obj, specials = self.config.objective, self.specials
        mask_rng, sample_rng = keys
        input_ids = batch["input_ids"]
        attention_mask = (input_ids != specials.pad).astype(jnp.int32)
        masked = objectives.mask_tokens(mask_rng, input_ids, _maskable(input_ids, specials), mask_id=specials.mask,
                                        mask_prob=obj.mask_prob, mask_token_prob=obj.mask_token_prob,
                                        max_predictions=self.config.max_predictions)
        counts = (jnp.maximum(masked.weights_BxP.sum(), 1.0),
                  jnp.maximum(attention_mask.sum().astype(jnp.float32), 1.0))
        whole = {"input_ids": input_ids, "segment_ids": batch["segment_ids"], "attention_mask": attention_mask,
                 "masked": masked, "sample_keys": jax.random.split(sample_rng, input_ids.shape[0])}
        return whole, counts

    def _sums(self, params, micro, keys, deterministic: bool, with_scores: bool = False):
        obj = self.config.objective
        gen_rng, disc_rng = keys
        variables = {"params": params}
        seg, att = micro["segment_ids"], micro["attention_mask"]

        def gen_logits(ids, positions):
            return self.model.apply(variables, ids, seg, att, positions, deterministic=deterministic,
                                    rngs={"dropout": gen_rng}, method=Electra.generator_logits)

        def disc_logits(ids):
            return self.model.apply(variables, ids, seg, att, deterministic=deterministic,
                                    rngs={"dropout": disc_rng}, method=Electra.discriminator_logits)

        return objectives.electra_sums(gen_logits, disc_logits, micro["sample_keys"], micro["masked"],
                                       micro["input_ids"], att, obj.temperature, obj.sampler, with_scores)

    def loss(self, params, micro, keys, counts, frozen=None, deterministic: bool = False):
        sums = self._sums(params, micro, keys, deterministic)
        return objectives.electra_loss(sums, *counts, self.config.objective.discriminator_weight), sums

    def evaluate(self, params, whole, keys, counts, frozen=None):
        """The loss sums and histograms of the discriminator's logits at replaced and original tokens (AUC)."""
        sums, (logits_BxL, replaced_BxL, token_mask_BxL) = self._sums(params, whole, keys, True, with_scores=True)
        return sums, objectives.logit_histograms(logits_BxL, replaced_BxL, token_mask_BxL)

    def eval_metrics(self, total, counts) -> dict:
        sums, (replaced_H, original_H) = total
        return {**self.metrics(sums, counts), "discriminator_auc": objectives.auc(replaced_H, original_H)}

    def zero_sums(self):
        return _zeros(objectives.Sums)

    def metrics(self, sums, counts):
        return {**objectives.electra_metrics(sums, self.config.objective.discriminator_weight), "tokens": counts[1]}


class AlbertObjective(HeldOut):
    """Whole-word n-gram MLM (80/10/10) + sentence-order prediction."""

    def __init__(self, config: Config, model, specials: SpecialIds, word_starts_V: np.ndarray):
        self.config, self.model, self.specials = config, model, specials
        self.word_starts_V = jnp.asarray(word_starts_V)
        # Random replacements come from the ordinary vocabulary, after the special ids.
        self.random_ids = (max(specials.pad, specials.unk, specials.cls, specials.sep, specials.mask) + 1,
                           config.model.vocab_size)

    def prepare(self, keys, batch):
        obj, specials = self.config.objective, self.specials
        select_rng, replace_rng = keys
        input_ids = batch["input_ids"]
        attention_mask = (input_ids != specials.pad).astype(jnp.int32)
        selected, _ = objectives.select_ngrams(select_rng, _maskable(input_ids, specials),
                                               self.word_starts_V[input_ids], mask_prob=obj.mask_prob,
                                               max_predictions=self.config.max_predictions, max_ngram=obj.max_ngram)
        masked = objectives.mask_selected(replace_rng, input_ids, selected,
                                          max_predictions=self.config.max_predictions, mask_id=specials.mask,
                                          mask_token_prob=obj.mask_token_prob, random_token_prob=obj.random_token_prob,
                                          random_ids=self.random_ids)
        counts = (jnp.maximum(masked.weights_BxP.sum(), 1.0), jnp.float32(input_ids.shape[0]),
                  attention_mask.sum().astype(jnp.float32))
        whole = {"segment_ids": batch["segment_ids"], "attention_mask": attention_mask, "masked": masked,
                 "sop_label": batch["sop_label"]}
        return whole, counts

    def loss(self, params, micro, keys, counts, frozen=None, deterministic: bool = False):
        masked = micro["masked"]
        mlm, sop = self.model.apply({"params": params}, masked.input_ids_BxL, micro["segment_ids"],
                                    micro["attention_mask"], masked.positions_BxP, deterministic=deterministic,
                                    rngs={"dropout": keys[0]})
        sums = objectives.albert_sums(mlm, sop, masked, micro["sop_label"])
        return objectives.albert_loss(sums, counts[0], counts[1]), sums

    def zero_sums(self):
        return _zeros(objectives.AlbertSums)

    def metrics(self, sums, counts):
        return {**objectives.albert_metrics(sums), "tokens": counts[2]}
