"""Which positions an objective predicts and what the model sees there, on device from a random key.

ELECTRA (google-research/electra pretrain_helpers.mask, `mask_tokens`): of the non-special tokens, round(15%)
are selected (at least 1, at most `max_predictions`); 85% of those become [MASK], the rest stay as they were.
ALBERT (google-research/albert create_masked_lm_predictions, `select_ngrams`): whole-word n-grams with
p(n) ~ 1/n. BERT's replacement of selected positions (`mask_selected`): [MASK], a random token, or unchanged.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from electra_jax.data.text_tokenizer import SpecialIds


def maskable(input_ids_BxL, specials: SpecialIds):
    """Positions that may be selected: every token but [PAD], [CLS], [SEP] and [MASK]."""
    return ((input_ids_BxL != specials.pad) & (input_ids_BxL != specials.cls) & (input_ids_BxL != specials.sep)
            & (input_ids_BxL != specials.mask))


def random_token_range(specials: SpecialIds, vocab_size: int) -> tuple[int, int]:
    """[low, high) of the ids a random replacement draws from: the ordinary vocabulary after the specials."""
    return max(specials.pad, specials.unk, specials.cls, specials.sep, specials.mask) + 1, vocab_size


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
    positions_BxP = top_positions(scores_BxL, max_predictions)
    weights_BxP = (jnp.arange(max_predictions)[None] < num_to_predict_B[:, None]).astype(jnp.float32)
    positions_BxP = jnp.where(weights_BxP > 0, positions_BxP, 0)
    labels_BxP = jnp.take_along_axis(input_ids_BxL, positions_BxP, axis=1) * weights_BxP.astype(jnp.int32)
    use_mask_BxP = (jax.random.uniform(keep_rng, positions_BxP.shape) < mask_token_prob) & (weights_BxP > 0)
    masked_ids_BxL = scatter(input_ids_BxL, positions_BxP, jnp.full_like(positions_BxP, mask_id), use_mask_BxP)
    return Masked(masked_ids_BxL, positions_BxP, labels_BxP, weights_BxP)


def top_positions(scores_BxL, k: int):
    """The positions of each row's k highest scores, highest first, ties to the lower position (lax.top_k's
    order). A stable sort, because XLA's SPMD partitioner splits a sort along the batch but gathers the whole
    batch onto every device for a top_k."""
    return jnp.argsort(-scores_BxL, axis=1, stable=True)[:, :k]


def scatter(ids_BxL, positions_BxP, values_BxP, where_BxP):
    """ids[b, positions[b, p]] = values[b, p] wherever where[b, p] (those positions are distinct). The other
    slots write nowhere: rewriting a current value could undo a write to the same position. Row by row (a
    batched scatter), which the SPMD partitioner keeps on each row's device."""
    target_BxP = jnp.where(where_BxP, positions_BxP, ids_BxL.shape[1])  # out of bounds: dropped
    return jax.vmap(lambda ids_L, target_P, values_P: ids_L.at[target_P].set(values_P, mode="drop"))(
        ids_BxL, target_BxP, values_BxP.astype(ids_BxL.dtype))


def at_rows(x_BxL, index_B):
    """x[b, index[b]] for every row b, as a batched gather (kept on each row's device)."""
    return jnp.take_along_axis(x_BxL, index_B[:, None], axis=1)[:, 0]


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

    def try_span(carry, t):
        covered_BxW, count_B, span_BxW = carry
        first_B = order_BxW[:, t]
        drawn_B = at_rows(n_BxW, first_B)
        take_B = jnp.zeros(B, jnp.int32)
        for n in range(1, max_ngram + 1):  # the largest n <= the drawn one that exists and fits the budget
            last_B = first_B + n
            size_B = at_rows(tokens_before_BxW1, jnp.minimum(last_B, L)) - at_rows(tokens_before_BxW1, first_B)
            fits_B = (n <= drawn_B) & (last_B <= num_words_B) & (count_B + size_B <= budget_B)
            take_B = jnp.where(fits_B, n, take_B)
        span_BxW_mask = (jnp.arange(L)[None] >= first_B[:, None]) & (jnp.arange(L)[None] < (first_B + take_B)[:, None])
        overlaps_B = (covered_BxW & span_BxW_mask).any(1)
        accept_B = (take_B > 0) & ~overlaps_B & (first_B < num_words_B)
        size_B = (at_rows(tokens_before_BxW1, jnp.minimum(first_B + take_B, L))
                  - at_rows(tokens_before_BxW1, first_B))
        covered_BxW = covered_BxW | (span_BxW_mask & accept_B[:, None])
        count_B = count_B + jnp.where(accept_B, size_B, 0)
        span_BxW = scatter(span_BxW, first_B[:, None], take_B[:, None], accept_B[:, None])
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
    positions_BxP = top_positions(scores_BxL, max_predictions)
    weights_BxP = jnp.take_along_axis(selected_BxL, positions_BxP, axis=1).astype(jnp.float32)
    positions_BxP = jnp.where(weights_BxP > 0, positions_BxP, 0)
    labels_BxP = jnp.take_along_axis(input_ids_BxL, positions_BxP, axis=1) * weights_BxP.astype(jnp.int32)
    u_BxP = jax.random.uniform(choice_rng, positions_BxP.shape)
    random_BxP = jax.random.randint(random_rng, positions_BxP.shape, *random_ids)
    values_BxP = jnp.where(u_BxP < mask_token_prob, mask_id, random_BxP)
    change_BxP = (u_BxP < mask_token_prob + random_token_prob) & (weights_BxP > 0)
    masked_ids_BxL = scatter(input_ids_BxL, positions_BxP, values_BxP, change_BxP)
    return Masked(masked_ids_BxL, positions_BxP, labels_BxP, weights_BxP)



def selected_positions(rng, input_ids_BxL, maskable_BxL, *, mask_prob: float, max_predictions: int):
    """A B x L boolean of the positions ELECTRA's rule selects (`mask_tokens` without the replacement)."""
    chosen = mask_tokens(rng, input_ids_BxL, maskable_BxL, mask_id=0, mask_prob=mask_prob, mask_token_prob=0.0,
                         max_predictions=max_predictions)
    return scatter(jnp.zeros_like(input_ids_BxL), chosen.positions_BxP, jnp.ones_like(chosen.positions_BxP),
                   chosen.weights_BxP > 0) > 0
