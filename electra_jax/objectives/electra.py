"""ELECTRA's replaced-token detection (google-research/electra): the generator predicts the originals at the
masked positions (`masking.mask_tokens`); its sample (under stop_gradient) fills them in; the discriminator
labels a position "replaced" only where the sample differs from the original. Loss = generator MLM mean +
`discriminator_weight` (50) x discriminator mean. The sample is drawn by inverse CDF by default
(`objective.sampler`), the same distribution as the original's Gumbel-max at a fraction of the cost.
Held-out evaluation adds the discriminator's ROC AUC from summable logit histograms.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from electra_jax.config import Config
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.models.electra import Electra
from electra_jax.objectives.base import Counts, Objective, cross_entropy_and_hit, real_tokens
from electra_jax.objectives.masking import Masked, mask_selected, mask_tokens, maskable, scatter, select_ngrams


def gumbel_sample(keys_B, logits_BxPxV, temperature: float = 1.0):
    """One token per position from softmax(logits / temperature), no gradient.

    One key per sequence, so a sequence draws the same sample whichever micro-batch it lands in.
    """
    logits_BxPxV = jax.lax.stop_gradient(logits_BxPxV) / temperature
    noise_BxPxV = jax.vmap(lambda key, row: jax.random.gumbel(key, row.shape, row.dtype))(keys_B, logits_BxPxV)
    return jnp.argmax(logits_BxPxV + noise_BxPxV, axis=-1)


def inverse_cdf_sample(keys_B, logits_BxPxV, temperature: float = 1.0):
    """Exactly the distribution of `gumbel_sample` (softmax(logits / temperature)), no gradient, from one
    uniform per position instead of one Gumbel variate per vocabulary entry: drawing B x P x V random numbers
    can cost more than the generator itself.

    Two-level inverse CDF: pick a block of ~sqrt(V) tokens by its mass, then a token inside it, so
    both cumulative sums are short. The last block may be shorter; nothing is padded (padding would copy
    the whole B x P x V logits).
    """
    logits_BxPxV = jax.lax.stop_gradient(logits_BxPxV).astype(jnp.float32)
    if temperature != 1.0:  # at 1.0 the exponentials below are the loss's own (XLA shares them)
        logits_BxPxV = logits_BxPxV / temperature
    B, P, V = logits_BxPxV.shape
    block = -(-int(V ** 0.5) // 8) * 8
    full_blocks, tail = divmod(V, block)
    weights_BxPxV = jnp.exp(logits_BxPxV - logits_BxPxV.max(-1, keepdims=True))  # unnormalised probabilities
    block_mass_BxPxN = weights_BxPxV[..., : full_blocks * block].reshape(B, P, full_blocks, block).sum(-1)
    if tail:
        block_mass_BxPxN = jnp.concatenate([block_mass_BxPxN, weights_BxPxV[..., full_blocks * block:].sum(-1, keepdims=True)], -1)
    num_blocks = block_mass_BxPxN.shape[-1]
    block_cdf_BxPxN = jnp.cumsum(block_mass_BxPxN, -1)
    uniform_BxP = jax.vmap(lambda key: jax.random.uniform(key, (P,)))(keys_B)
    target_BxP = uniform_BxP * block_cdf_BxPxN[..., -1]
    chosen_BxP = jnp.minimum((block_cdf_BxPxN <= target_BxP[..., None]).sum(-1), num_blocks - 1)
    token_BxPxK = chosen_BxP[..., None] * block + jnp.arange(block)
    in_block_BxPxK = jnp.where(token_BxPxK < V, jnp.take_along_axis(weights_BxPxV, jnp.minimum(token_BxPxK, V - 1), -1), 0.0)
    block_start_BxP = jnp.take_along_axis(block_cdf_BxPxN, chosen_BxP[..., None], -1)[..., 0] - in_block_BxPxK.sum(-1)
    in_block_cdf_BxPxK = jnp.cumsum(in_block_BxPxK, -1)
    offset_BxP = (in_block_cdf_BxPxK <= (target_BxP - block_start_BxP)[..., None]).sum(-1)
    return jnp.minimum(chosen_BxP * block + jnp.minimum(offset_BxP, block - 1), V - 1)


SAMPLERS = {"gumbel": gumbel_sample, "inverse_cdf": inverse_cdf_sample}


class ElectraSums(NamedTuple):
    """Per-batch sums; dividing by global counts once makes accumulation exact."""
    mlm_loss: jax.Array
    mlm_correct: jax.Array
    num_predictions: jax.Array
    disc_loss: jax.Array
    disc_correct: jax.Array
    num_tokens: jax.Array
    true_positives: jax.Array  # predicted replaced and replaced
    predicted_replaced: jax.Array
    replaced: jax.Array


def electra_sums(gen_logits_fn, disc_logits_fn, sample_keys_B, masked: Masked, input_ids_BxL, attention_mask_BxL,
                 temperature: float, sampler: str = "inverse_cdf", with_scores: bool = False):
    """Generator MLM and discriminator RTD loss sums for one (micro-)batch; with `with_scores` also
    (discriminator logits, replaced labels, token mask), each B x L.

    gen_logits_fn(masked_ids, positions) -> B x P x V; disc_logits_fn(corrupted_ids) -> B x L.
    """
    gen_logits_BxPxV = gen_logits_fn(masked.input_ids_BxL, masked.positions_BxP)
    mlm_BxP, mlm_correct_BxP = cross_entropy_and_hit(gen_logits_BxPxV, masked.labels_BxP)

    sampled_BxP = SAMPLERS[sampler](sample_keys_B, gen_logits_BxPxV, temperature)
    corrupted_BxL = scatter(masked.input_ids_BxL, masked.positions_BxP, sampled_BxP, masked.weights_BxP > 0)
    token_mask_BxL = attention_mask_BxL.astype(jnp.float32)
    replaced_BxL = (corrupted_BxL != input_ids_BxL).astype(jnp.float32) * token_mask_BxL

    disc_logits_BxL = disc_logits_fn(corrupted_BxL)
    disc_BxL = optax.sigmoid_binary_cross_entropy(disc_logits_BxL, replaced_BxL)
    predicted_BxL = (disc_logits_BxL > 0).astype(jnp.float32) * token_mask_BxL
    w = masked.weights_BxP
    sums = ElectraSums(
        mlm_loss=(mlm_BxP * w).sum(), mlm_correct=(mlm_correct_BxP * w).sum(), num_predictions=w.sum(),
        disc_loss=(disc_BxL * token_mask_BxL).sum(),
        disc_correct=((predicted_BxL == replaced_BxL) * token_mask_BxL).sum(), num_tokens=token_mask_BxL.sum(),
        true_positives=(predicted_BxL * replaced_BxL).sum(), predicted_replaced=predicted_BxL.sum(),
        replaced=replaced_BxL.sum())
    return (sums, (disc_logits_BxL, replaced_BxL, token_mask_BxL)) if with_scores else sums


# Discriminator logits binned for a summable ROC AUC: 1/128-wide bins over [-16, 16] (a sigmoid of 1e-7 to
# 1 - 1e-7), the two ends open.
AUC_BINS, AUC_RANGE = 4096, 16.0


def logit_histograms(logits_BxL, positive_BxL, weights_BxL):
    """Counts of the logits in AUC_BINS bins, at positive and at negative positions (summable over batches)."""
    scaled_BxL = (logits_BxL + AUC_RANGE) / (2 * AUC_RANGE) * AUC_BINS
    bin_BxL = jnp.clip(scaled_BxL.astype(jnp.int32), 0, AUC_BINS - 1).reshape(-1)
    positive_H = jnp.zeros(AUC_BINS, jnp.float32).at[bin_BxL].add((positive_BxL * weights_BxL).reshape(-1))
    negative_H = jnp.zeros(AUC_BINS, jnp.float32).at[bin_BxL].add(((1 - positive_BxL) * weights_BxL).reshape(-1))
    return positive_H, negative_H


def auc(positive_H, negative_H) -> float:
    """ROC AUC from the two histograms: P(a positive scores above a negative), a shared bin counting half."""
    positive_H, negative_H = np.asarray(positive_H, np.float64), np.asarray(negative_H, np.float64)
    below_H = np.cumsum(negative_H) - negative_H
    pairs = positive_H.sum() * negative_H.sum()
    return float((positive_H * (below_H + 0.5 * negative_H)).sum() / pairs) if pairs else float("nan")


def electra_loss(sums: ElectraSums, num_predictions, num_tokens, discriminator_weight: float):
    """MLM mean + weight * RTD mean, normalised by the global counts of the whole (accumulated) batch."""
    return sums.mlm_loss / num_predictions + discriminator_weight * sums.disc_loss / num_tokens


def electra_metrics(sums: ElectraSums, discriminator_weight: float) -> dict[str, jax.Array]:
    safe = lambda x: jnp.maximum(x, 1.0)  # noqa: E731
    precision = sums.true_positives / safe(sums.predicted_replaced)
    recall = sums.true_positives / safe(sums.replaced)
    return {
        "loss": electra_loss(sums, safe(sums.num_predictions), safe(sums.num_tokens), discriminator_weight),
        "generator_loss": sums.mlm_loss / safe(sums.num_predictions),
        "generator_accuracy": sums.mlm_correct / safe(sums.num_predictions),
        "discriminator_loss": sums.disc_loss / safe(sums.num_tokens),
        "discriminator_accuracy": sums.disc_correct / safe(sums.num_tokens),
        "replaced_precision": precision,
        "replaced_recall": recall,
        "replaced_f1": 2 * precision * recall / jnp.maximum(precision + recall, 1e-9),
        "replaced_fraction": sums.replaced / safe(sums.num_tokens),
    }




class ElectraObjective(Objective):
    """Generator MLM + `discriminator_weight` x replaced-token detection, on an `models.electra.Electra`.

    With `objective.whole_word_masking` the generator's positions are whole words: BERT's whole-word rule
    (google-research/bert create_masked_lm_predictions), words in a random order, each taken whole if it
    fits the same budget as `mask_tokens` (round(mask_prob x maskable tokens), at least 1, at most
    max_predictions), else skipped; `word_starts_V` (per id: not a ## continuation) says where words begin.
    Each selected token then becomes [MASK] with mask_token_prob, as without it."""
    Sums = ElectraSums

    def __init__(self, config: Config, model, specials: SpecialIds, word_starts_V=None):
        self.config, self.model, self.specials = config, model, specials
        if config.objective.whole_word_masking and word_starts_V is None:
            raise ValueError("objective.whole_word_masking needs the tokenizer's word starts (word_starts_V)")
        self.word_starts_V = None if word_starts_V is None else jnp.asarray(word_starts_V)

    def prepare(self, keys, batch):
        obj, specials = self.config.objective, self.specials
        mask_rng, sample_rng = keys
        input_ids = batch["input_ids"]
        attention_mask, tokens = real_tokens(input_ids, specials.pad)
        if obj.whole_word_masking:
            select_rng, replace_rng = jax.random.split(mask_rng)
            selected, _ = select_ngrams(select_rng, maskable(input_ids, specials), self.word_starts_V[input_ids],
                                        mask_prob=obj.mask_prob, max_predictions=self.config.max_predictions,
                                        max_ngram=1)
            masked = mask_selected(replace_rng, input_ids, selected, max_predictions=self.config.max_predictions,
                                   mask_id=specials.mask, mask_token_prob=obj.mask_token_prob,
                                   random_token_prob=0.0, random_ids=(0, 1))
        else:
            masked = mask_tokens(mask_rng, input_ids, maskable(input_ids, specials), mask_id=specials.mask,
                                 mask_prob=obj.mask_prob, mask_token_prob=obj.mask_token_prob,
                                 max_predictions=self.config.max_predictions)
        counts = Counts(predictions=jnp.maximum(masked.weights_BxP.sum(), 1.0), tokens=tokens,
                        sequences=jnp.float32(input_ids.shape[0]))
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

        return electra_sums(gen_logits, disc_logits, micro["sample_keys"], micro["masked"], micro["input_ids"], att,
                            obj.temperature, obj.sampler, with_scores)

    def loss(self, params, micro, keys, counts, frozen=None, deterministic: bool = False):
        sums = self._sums(params, micro, keys, deterministic)
        return electra_loss(sums, counts.predictions, counts.tokens, self.config.objective.discriminator_weight), sums

    def evaluate(self, params, whole, keys, counts, frozen=None):
        """The loss sums and histograms of the discriminator's logits at replaced and original tokens (AUC)."""
        sums, (logits_BxL, replaced_BxL, token_mask_BxL) = self._sums(params, whole, keys, True, with_scores=True)
        return sums, logit_histograms(logits_BxL, replaced_BxL, token_mask_BxL)

    def eval_metrics(self, total, counts) -> dict:
        sums, (replaced_H, original_H) = total
        return {**self.metrics(sums, counts), "discriminator_auc": auc(replaced_H, original_H)}

    def metrics(self, sums, counts):
        return {**electra_metrics(sums, self.config.objective.discriminator_weight), "tokens": counts.tokens}
