"""ELECTRA's pretraining objective, all on device inside the jitted step.

masking (google-research/electra pretrain_helpers.mask): of the non-special tokens, round(15%) are
selected (at least 1, at most `max_predictions`); 85% of those become [MASK], the rest stay as
they were (no random tokens). The generator predicts the originals at the selected positions; its
Gumbel sample (under stop_gradient) fills them in; the discriminator labels a position "replaced"
only where the sample differs from the original. The sample is drawn by inverse CDF by default
(`objective.sampler`), the same distribution as the original's Gumbel-max at a fraction of the cost.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
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
    """ids[b, positions[b, p]] = values[b, p] wherever where[b, p] (positions are distinct)."""
    batch_B1 = jnp.arange(ids_BxL.shape[0])[:, None]
    current_BxP = ids_BxL[batch_B1, positions_BxP]
    return ids_BxL.at[batch_B1, positions_BxP].set(jnp.where(where_BxP, values_BxP, current_BxP))


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
                 temperature: float, sampler: str = "inverse_cdf") -> Sums:
    """Generator MLM and discriminator RTD loss sums for one (micro-)batch.

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
    return Sums(
        mlm_loss=(mlm_BxP * w).sum(), mlm_correct=(mlm_correct_BxP * w).sum(), num_predictions=w.sum(),
        disc_loss=(disc_BxL * token_mask_BxL).sum(),
        disc_correct=((predicted_BxL == replaced_BxL) * token_mask_BxL).sum(), num_tokens=token_mask_BxL.sum(),
        true_positives=(predicted_BxL * replaced_BxL).sum(), predicted_replaced=predicted_BxL.sum(),
        replaced=replaced_BxL.sum())


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
