"""BERT's masked-LM objective (google-research/bert create_masked_lm_predictions, without next-sentence
prediction, as RoBERTa and the adaptation of a multilingual teacher to one language do): of the non-special
tokens, round(mask_prob) are selected (at least 1, at most max_predictions; whole words with
`objective.whole_word_masking`), then `mask_token_prob` of them become [MASK], `random_token_prob` a random
token and the rest stay (80/10/10 in `configs/bert_mlm.yaml`); the loss is the mean cross-entropy over the
selected positions, as BertForMaskedLM's.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from electra_jax.config import Config
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.objectives.base import Counts, Objective, cross_entropy_and_hit, real_tokens
from electra_jax.objectives.masking import mask_selected, maskable, random_token_range, select_ngrams, \
    selected_positions


class MlmSums(NamedTuple):
    mlm_loss: jax.Array
    mlm_correct: jax.Array
    num_predictions: jax.Array


class BertMlmObjective(Objective):
    """Masked-LM on a `models.bert.Bert`; `word_starts_V` (per id: not a ## continuation) for whole words."""
    Sums = MlmSums

    def __init__(self, config: Config, model, specials: SpecialIds, word_starts_V: np.ndarray | None = None):
        self.config, self.model, self.specials = config, model, specials
        if config.objective.whole_word_masking and word_starts_V is None:
            raise ValueError("objective.whole_word_masking needs the tokenizer's word starts (word_starts_V)")
        self.word_starts_V = None if word_starts_V is None else jnp.asarray(word_starts_V)
        self.random_ids = random_token_range(specials, config.model.vocab_size)

    def prepare(self, keys, batch):
        obj, specials = self.config.objective, self.specials
        select_rng, replace_rng = keys
        input_ids = batch["input_ids"]
        attention_mask, tokens = real_tokens(input_ids, specials.pad)
        candidates = maskable(input_ids, specials)
        if obj.whole_word_masking:  # whole words in a random order while they fit the budget (n-grams of 1)
            selected, _ = select_ngrams(select_rng, candidates, self.word_starts_V[input_ids],
                                        mask_prob=obj.mask_prob, max_predictions=self.config.max_predictions,
                                        max_ngram=1)
        else:
            selected = selected_positions(select_rng, input_ids, candidates, mask_prob=obj.mask_prob,
                                          max_predictions=self.config.max_predictions)
        masked = mask_selected(replace_rng, input_ids, selected, max_predictions=self.config.max_predictions,
                               mask_id=specials.mask, mask_token_prob=obj.mask_token_prob,
                               random_token_prob=obj.random_token_prob, random_ids=self.random_ids)
        counts = Counts(predictions=jnp.maximum(masked.weights_BxP.sum(), 1.0), tokens=tokens,
                        sequences=jnp.float32(input_ids.shape[0]))
        return {"segment_ids": batch["segment_ids"], "attention_mask": attention_mask, "masked": masked}, counts

    def loss(self, params, micro, keys, counts, frozen=None, deterministic: bool = False):
        masked = micro["masked"]
        logits_BxPxV = self.model.apply({"params": params}, masked.input_ids_BxL, micro["segment_ids"],
                                        micro["attention_mask"], masked.positions_BxP, deterministic=deterministic,
                                        rngs={"dropout": keys[0]})
        loss_BxP, hit_BxP = cross_entropy_and_hit(logits_BxPxV, masked.labels_BxP)
        w = masked.weights_BxP
        sums = MlmSums(mlm_loss=(loss_BxP * w).sum(), mlm_correct=(hit_BxP * w).sum(), num_predictions=w.sum())
        return sums.mlm_loss / counts.predictions, sums

    def metrics(self, sums, counts):
        predictions = jnp.maximum(sums.num_predictions, 1.0)
        return {"loss": sums.mlm_loss / predictions, "mlm_loss": sums.mlm_loss / predictions,
                "mlm_accuracy": sums.mlm_correct / predictions, "tokens": counts.tokens}
