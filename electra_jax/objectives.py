"""The pretraining objectives, all on device inside the jitted step: ELECTRA's, then ALBERT's.

masking (google-research/electra pretrain_helpers.mask): of the non-special tokens, round(15%) are
selected (at least 1, at most `max_predictions`); 85% of those become [MASK], the rest stay as
they were (no random tokens). The generator predicts the originals at the selected positions; its
Gumbel sample (under stop_gradient) fills them in; the discriminator labels a position "replaced"
only where the sample differs from the original. The sample is drawn by inverse CDF by default
(`objective.sampler`), the same distribution as the original's Gumbel-max at a fraction of the cost.

ALBERT (google-research/albert): whole-word n-grams selected (`select_ngrams`), 80% [MASK], 10% a random
token, 10% unchanged; loss = MLM + sentence-order prediction (SOP).
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax


class Masked(NamedTuple):
    input_ids_BxL: jax.Array  # with [MASK] at 85% of the selected positions
    positions_BxP: jax.Array  # selected positions (padded slots point at 0 and have weight 0)
    labels_BxP: jax.Array  # original ids there
    weights_BxP: jax.Array  # 1.0 for real predictions, 0.0 for padding slots


def mask_tokens(rng, input_ids_BxL, maskable_BxL, *, mask_id: int, mask_prob: float, mask_token_prob: float,
                max_predictions: int) -> Masked:
    """Select positions without replacement (Gumbel top-k over the maskable ones) and mask them."""
    select_rng, keep_rng = jax.random.split(rng)
    num_maskable_B = maskable_BxL.sum(axis=1)
    num_to_predict_B = jnp.clip(jnp.round(num_maskable_B * mask_prob).astype(jnp.int32), 1, max_predictions)
    num_to_predict_B = jnp.minimum(num_to_predict_B, num_maskable_B)
    scores_BxL = jnp.where(maskable_BxL, jax.random.uniform(select_rng, maskable_BxL.shape), -1.0)
    _, positions_BxP = jax.lax.top_k(scores_BxL, max_predictions)
    weights_BxP = (jnp.arange(max_predictions)[None] < num_to_predict_B[:, None]).astype(jnp.float32)
    positions_BxP = jnp.where(weights_BxP > 0, positions_BxP, 0)
    labels_BxP = jnp.take_along_axis(input_ids_BxL, positions_BxP, axis=1) * weights_BxP.astype(jnp.int32)
    use_mask_BxP = (jax.random.uniform(keep_rng, positions_BxP.shape) < mask_token_prob) & (weights_BxP > 0)
    masked_ids_BxL = scatter(input_ids_BxL, positions_BxP, jnp.full_like(positions_BxP, mask_id), use_mask_BxP)
    return Masked(masked_ids_BxL, positions_BxP, labels_BxP, weights_BxP)


def scatter(ids_BxL, positions_BxP, values_BxP, where_BxP):
    """ids[b, positions[b, p]] = values[b, p] wherever where[b, p] (those positions are distinct). The other
    slots write nowhere: rewriting a current value could undo a write to the same position."""
    batch_B1 = jnp.arange(ids_BxL.shape[0])[:, None]
    target_BxP = jnp.where(where_BxP, positions_BxP, ids_BxL.shape[1])  # out of bounds: dropped
    return ids_BxL.at[batch_B1, target_BxP].set(values_BxP.astype(ids_BxL.dtype), mode="drop")


def gumbel_sample(keys_B, logits_BxPxV, temperature: float = 1.0):
    """One token per position from softmax(logits / temperature), no gradient.

    One key per sequence, so a sequence draws the same sample whichever micro-batch it lands in.
    """
    logits_BxPxV = jax.lax.stop_gradient(logits_BxPxV) / temperature
    noise_BxPxV = jax.vmap(lambda key, row: jax.random.gumbel(key, row.shape, row.dtype))(keys_B, logits_BxPxV)
    return jnp.argmax(logits_BxPxV + noise_BxPxV, axis=-1)


def inverse_cdf_sample(keys_B, logits_BxPxV, temperature: float = 1.0):
    """Exactly the distribution of `gumbel_sample` (softmax(logits / temperature)), no gradient, from one
    uniform per position instead of one Gumbel variate per vocabulary entry (on CPU the noise for
    32 x 20 x 30522 logits costs more than the generator itself).

    Two-level inverse CDF: pick a block of ~sqrt(V) tokens by its mass, then a token inside it, so
    both cumulative sums are short. The last block may be shorter; nothing is padded (a padded copy
    of the logits cost 30 ms a step on CPU).
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


def cross_entropy_and_hit(logits_BxPxV, labels_BxP):
    """Softmax cross-entropy and whether the label has the top logit, from one max and one pass of
    exponentials (an argmax over 32 x 20 x 30522 logits took 45 ms on CPU; this compare is free).
    A label tied for the top logit counts as a hit."""
    max_BxPx1 = jax.lax.stop_gradient(logits_BxPxV.max(-1, keepdims=True))
    shifted_BxPxV = logits_BxPxV - max_BxPx1
    label_shifted_BxP = jnp.take_along_axis(shifted_BxPxV, labels_BxP[..., None], -1)[..., 0]
    loss_BxP = jnp.log(jnp.exp(shifted_BxPxV).sum(-1)) - label_shifted_BxP
    return loss_BxP, label_shifted_BxP >= 0


class Sums(NamedTuple):
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
    sums = Sums(
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


def electra_loss(sums: Sums, num_predictions, num_tokens, discriminator_weight: float):
    """MLM mean + weight * RTD mean, normalised by the global counts of the whole (accumulated) batch."""
    return sums.mlm_loss / num_predictions + discriminator_weight * sums.disc_loss / num_tokens


def electra_metrics(sums: Sums, discriminator_weight: float) -> dict[str, jax.Array]:
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


# ---------------------------------------------------------------------------- ALBERT: n-gram masking, MLM + SOP

def ngram_probabilities(max_ngram: int) -> jax.Array:
    """p(n) proportional to 1/n for n = 1..max_ngram (google-research/albert)."""
    inverse = 1.0 / jnp.arange(1, max_ngram + 1, dtype=jnp.float32)
    return inverse / inverse.sum()


def select_ngrams(rng, maskable_BxL, word_start_BxL, *, mask_prob: float, max_predictions: int, max_ngram: int):
    """Whole-word n-gram selection as google-research/albert's create_masked_lm_predictions does it.

    Words are maximal runs of maskable tokens that begin at a word start (a token after a non-maskable one
    also begins a word). In a random order of words, each draws n with p(n) ~ 1/n and tries the n words
    from it; n shrinks until they fit the budget of round(mask_prob * maskable tokens) (at least 1, at
    most `max_predictions`); a span overlapping an earlier one is skipped. Returns (selected_BxL,
    span_BxW: for each word index, the n of the span taken from it, else 0).
    """
    order_rng, n_rng = jax.random.split(rng)
    B, L = maskable_BxL.shape
    previous_maskable_BxL = jnp.pad(maskable_BxL, ((0, 0), (1, 0)))[:, :-1]
    starts_BxL = maskable_BxL & (word_start_BxL | ~previous_maskable_BxL)
    word_of_BxL = jnp.where(maskable_BxL, jnp.cumsum(starts_BxL, axis=1) - 1, L)  # L: no word
    num_words_B = starts_BxL.sum(1)
    # Per word w (< num_words): its token count, and the cumulative count before it (for span sizes).
    word_tokens_BxW = jax.vmap(lambda w: jnp.bincount(w, length=L + 1)[:L])(word_of_BxL)
    tokens_before_BxW1 = jnp.pad(jnp.cumsum(word_tokens_BxW, axis=1), ((0, 0), (1, 0)))
    budget_B = jnp.clip(jnp.round(maskable_BxL.sum(1) * mask_prob).astype(jnp.int32), 1, max_predictions)
    real_word_BxW = jnp.arange(L)[None] < num_words_B[:, None]
    order_BxW = jnp.argsort(jnp.where(real_word_BxW, jax.random.uniform(order_rng, (B, L)), 2.0), axis=1)
    n_BxW = jax.random.choice(n_rng, jnp.arange(1, max_ngram + 1), (B, L), p=ngram_probabilities(max_ngram))
    rows_B = jnp.arange(B)

    def try_span(carry, t):
        covered_BxW, count_B, span_BxW = carry
        first_B = order_BxW[:, t]
        drawn_B = n_BxW[rows_B, first_B]
        take_B = jnp.zeros(B, jnp.int32)
        for n in range(1, max_ngram + 1):  # the largest n <= the drawn one that exists and fits the budget
            last_B = first_B + n
            size_B = tokens_before_BxW1[rows_B, jnp.minimum(last_B, L)] - tokens_before_BxW1[rows_B, first_B]
            fits_B = (n <= drawn_B) & (last_B <= num_words_B) & (count_B + size_B <= budget_B)
            take_B = jnp.where(fits_B, n, take_B)
        span_BxW_mask = (jnp.arange(L)[None] >= first_B[:, None]) & (jnp.arange(L)[None] < (first_B + take_B)[:, None])
        overlaps_B = (covered_BxW & span_BxW_mask).any(1)
        accept_B = (take_B > 0) & ~overlaps_B & (first_B < num_words_B)
        size_B = tokens_before_BxW1[rows_B, jnp.minimum(first_B + take_B, L)] - tokens_before_BxW1[rows_B, first_B]
        covered_BxW = covered_BxW | (span_BxW_mask & accept_B[:, None])
        count_B = count_B + jnp.where(accept_B, size_B, 0)
        span_BxW = span_BxW.at[rows_B, first_B].set(jnp.where(accept_B, take_B, span_BxW[rows_B, first_B]))
        return (covered_BxW, count_B, span_BxW), None

    initial = (jnp.zeros((B, L), bool), jnp.zeros(B, jnp.int32), jnp.zeros((B, L), jnp.int32))
    (covered_BxW, _, span_BxW), _ = jax.lax.scan(try_span, initial, jnp.arange(L))
    covered_padded_BxW1 = jnp.pad(covered_BxW, ((0, 0), (0, 1)))
    selected_BxL = jnp.take_along_axis(covered_padded_BxW1, word_of_BxL, axis=1) & maskable_BxL
    return selected_BxL, span_BxW


def mask_selected(rng, input_ids_BxL, selected_BxL, *, max_predictions: int, mask_id: int, mask_token_prob: float,
                  random_token_prob: float, random_ids: tuple[int, int]) -> Masked:
    """BERT's replacement of the selected positions: [MASK] with `mask_token_prob`, a random id from
    `random_ids` = [low, high) with `random_token_prob`, else unchanged."""
    choice_rng, random_rng = jax.random.split(rng)
    L = input_ids_BxL.shape[1]
    scores_BxL = jnp.where(selected_BxL, L - jnp.arange(L)[None], 0)  # selected first, in position order
    _, positions_BxP = jax.lax.top_k(scores_BxL, max_predictions)
    weights_BxP = jnp.take_along_axis(selected_BxL, positions_BxP, axis=1).astype(jnp.float32)
    positions_BxP = jnp.where(weights_BxP > 0, positions_BxP, 0)
    labels_BxP = jnp.take_along_axis(input_ids_BxL, positions_BxP, axis=1) * weights_BxP.astype(jnp.int32)
    u_BxP = jax.random.uniform(choice_rng, positions_BxP.shape)
    random_BxP = jax.random.randint(random_rng, positions_BxP.shape, *random_ids)
    values_BxP = jnp.where(u_BxP < mask_token_prob, mask_id, random_BxP)
    change_BxP = (u_BxP < mask_token_prob + random_token_prob) & (weights_BxP > 0)
    masked_ids_BxL = scatter(input_ids_BxL, positions_BxP, values_BxP, change_BxP)
    return Masked(masked_ids_BxL, positions_BxP, labels_BxP, weights_BxP)


class AlbertSums(NamedTuple):
    """Per-batch sums of the MLM and SOP terms; divided by the global counts once."""
    mlm_loss: jax.Array
    mlm_correct: jax.Array
    num_predictions: jax.Array
    sop_loss: jax.Array
    sop_correct: jax.Array
    num_sequences: jax.Array


def albert_sums(mlm_logits_BxPxV, sop_logits_Bx2, masked: Masked, sop_labels_B) -> AlbertSums:
    mlm_BxP, mlm_hit_BxP = cross_entropy_and_hit(mlm_logits_BxPxV, masked.labels_BxP)
    sop_B = optax.softmax_cross_entropy_with_integer_labels(sop_logits_Bx2, sop_labels_B)
    w = masked.weights_BxP
    return AlbertSums(mlm_loss=(mlm_BxP * w).sum(), mlm_correct=(mlm_hit_BxP * w).sum(), num_predictions=w.sum(),
                      sop_loss=sop_B.sum(), sop_correct=(sop_logits_Bx2.argmax(-1) == sop_labels_B).sum(),
                      num_sequences=jnp.float32(sop_labels_B.shape[0]))


def albert_loss(sums: AlbertSums, num_predictions, num_sequences):
    """MLM mean + SOP mean (as AlbertForPreTraining's loss), over the whole (accumulated) batch."""
    return sums.mlm_loss / num_predictions + sums.sop_loss / num_sequences


def albert_metrics(sums: AlbertSums) -> dict[str, jax.Array]:
    predictions, sequences = jnp.maximum(sums.num_predictions, 1.0), jnp.maximum(sums.num_sequences, 1.0)
    return {
        "loss": albert_loss(sums, predictions, sequences),
        "mlm_loss": sums.mlm_loss / predictions,
        "mlm_accuracy": sums.mlm_correct / predictions,
        "sop_loss": sums.sop_loss / sequences,
        "sop_accuracy": sums.sop_correct / sequences,
    }
