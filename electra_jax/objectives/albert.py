"""ALBERT's objective (google-research/albert): whole-word n-grams selected (`masking.select_ngrams`), 80%
[MASK], 10% a random token, 10% unchanged; loss = MLM mean + sentence-order prediction (SOP) mean, as
AlbertForPreTraining's loss.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from electra_jax.config import Config
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.objectives.base import Counts, Objective, cross_entropy_and_hit, real_tokens
from electra_jax.objectives.masking import Masked, mask_selected, maskable, random_token_range, select_ngrams


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


class AlbertObjective(Objective):
    """Whole-word n-gram MLM (80/10/10) + sentence-order prediction, on a `models.albert.Albert`.
    `word_starts_V` (per token id: does it begin a word?) comes from the run's tokenizer."""
    Sums = AlbertSums

    def __init__(self, config: Config, model, specials: SpecialIds, word_starts_V: np.ndarray):
        self.config, self.model, self.specials = config, model, specials
        self.word_starts_V = jnp.asarray(word_starts_V)
        self.random_ids = random_token_range(specials, config.model.vocab_size)

    def prepare(self, keys, batch):
        obj, specials = self.config.objective, self.specials
        select_rng, replace_rng = keys
        input_ids = batch["input_ids"]
        attention_mask, tokens = real_tokens(input_ids, specials.pad)
        selected, _ = select_ngrams(select_rng, maskable(input_ids, specials), self.word_starts_V[input_ids],
                                    mask_prob=obj.mask_prob, max_predictions=self.config.max_predictions,
                                    max_ngram=obj.max_ngram)
        masked = mask_selected(replace_rng, input_ids, selected, max_predictions=self.config.max_predictions,
                               mask_id=specials.mask, mask_token_prob=obj.mask_token_prob,
                               random_token_prob=obj.random_token_prob, random_ids=self.random_ids)
        counts = Counts(predictions=jnp.maximum(masked.weights_BxP.sum(), 1.0), tokens=tokens,
                        sequences=jnp.float32(input_ids.shape[0]))
        whole = {"segment_ids": batch["segment_ids"], "attention_mask": attention_mask, "masked": masked,
                 "sop_label": batch["sop_label"]}
        return whole, counts

    def loss(self, params, micro, keys, counts, frozen=None, deterministic: bool = False):
        masked = micro["masked"]
        mlm, sop = self.model.apply({"params": params}, masked.input_ids_BxL, micro["segment_ids"],
                                    micro["attention_mask"], masked.positions_BxP, deterministic=deterministic,
                                    rngs={"dropout": keys[0]})
        sums = albert_sums(mlm, sop, masked, micro["sop_label"])
        return albert_loss(sums, counts.predictions, counts.sequences), sums

    def metrics(self, sums, counts):
        return {**albert_metrics(sums), "tokens": counts.tokens}
