"""Task-agnostic distillation of a BERT teacher into a student (LightMBERT, TinyBERT's losses); the command,
teacher loading and student initialisation are in `electra_jax.distill`.

Losses (each weighted by `distill.*_weight`, each mapped (student, teacher) layer pair adding its own term;
the student runs with dropout, so a pair at layer 0 compares its dropped-out embedding output with the
teacher's clean one, as TinyBERT's embedding-layer loss does):
- hidden: mean over real tokens of the mean squared difference of the two hidden states;
- attention: mean over real query tokens and heads of the squared distance between the two attention
  distributions of the mapped layers (probabilities, before dropout);
- logit: the KL divergence from the teacher's to the student's MLM distribution at masked positions, both
  at `distill.temperature`, times temperature^2 (Hinton et al.);
- mlm: the student's own masked-LM cross-entropy.
Logit and MLM terms mask the input (ELECTRA's selection rule, then BERT's replacement with
objective.mask_token_prob and random_token_prob) for both models; without them both see the text as it is.
Parameters no loss reaches are frozen (`frozen_label`): their gradients are stopped and the step carries them
over unchanged, so they stay bit-identical to the teacher's.
"""
from __future__ import annotations

from typing import NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax.config import Config, DistillConfig, ModelConfig
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.models.bert import Bert
from electra_jax.objectives.base import Counts, Objective, cross_entropy_and_hit, real_tokens
from electra_jax.objectives.masking import mask_selected, maskable, random_token_range, selected_positions


def needs_masking(k: DistillConfig) -> bool:
    return bool(k.logit_weight or k.mlm_weight)


def frozen_label(k: DistillConfig):
    """Parameter labels for `optax.multi_transform`: "frozen" or "trained" (see the module docstring)."""
    def label(path, _):
        top = next(p.key for p in path if isinstance(p, jax.tree_util.DictKey))
        frozen = (top == "pooler" or (top == "embeddings" and k.freeze_embeddings)
                  or (top.startswith("predictions_") and not needs_masking(k)))
        return "frozen" if frozen else "trained"
    # A boxed (nn.Partitioned) parameter is labelled whole, so the optimizer state of a frozen one is an
    # empty MaskedNode in both the boxed tree that gives the shardings and the plain tree it shards.
    return lambda params: jax.tree_util.tree_map_with_path(label, params,
                                                           is_leaf=lambda x: isinstance(x, nn.Partitioned))


class DistillSums(NamedTuple):
    """Per-batch sums; divided by the global counts once, so accumulation equals one batch."""
    hidden: jax.Array
    attention: jax.Array
    logit: jax.Array
    mlm: jax.Array
    mlm_hits: jax.Array


class DistillObjective(Objective):
    """The distillation losses of a student `Bert` against a frozen teacher `Bert`, whose parameters reach
    `loss` as `frozen`; `pairs` are the (student, teacher) layers matched."""
    Sums = DistillSums

    def __init__(self, config: Config, teacher: ModelConfig, specials: SpecialIds, pairs):
        self.config, self.specials, self.pairs = config, specials, pairs
        self.k = config.distill
        self.student, self.teacher = Bert(config.model), Bert(teacher)
        self.random_ids = random_token_range(specials, config.model.vocab_size)

    def prepare(self, keys, batch):
        obj, specials = self.config.objective, self.specials
        input_ids = batch["input_ids"]
        attention_mask, tokens = real_tokens(input_ids, specials.pad)
        whole = {"input_ids": input_ids, "segment_ids": batch["segment_ids"], "attention_mask": attention_mask}
        predictions = jnp.float32(1.0)
        if needs_masking(self.k):
            select_rng, replace_rng = keys
            selected = selected_positions(select_rng, input_ids, maskable(input_ids, specials), mask_prob=obj.mask_prob,
                                          max_predictions=self.config.max_predictions)
            masked = mask_selected(replace_rng, input_ids, selected, max_predictions=self.config.max_predictions,
                                   mask_id=specials.mask, mask_token_prob=obj.mask_token_prob,
                                   random_token_prob=obj.random_token_prob, random_ids=self.random_ids)
            whole.update(input_ids=masked.input_ids_BxL, masked=masked)
            predictions = jnp.maximum(masked.weights_BxP.sum(), 1.0)
        return whole, Counts(predictions=predictions, tokens=tokens, sequences=jnp.float32(input_ids.shape[0]))

    def _forward(self, module: Bert, params, micro, deterministic: bool, rng=None):
        """(MLM logits at the masked positions or None, hidden states per layer, attention probabilities of
        layer i (1-based) at [i])."""
        rngs = {} if deterministic else {"dropout": rng}
        inputs = (micro["input_ids"], micro["segment_ids"], micro["attention_mask"])
        if "masked" in micro:
            logits, state = module.apply({"params": params}, *inputs, micro["masked"].positions_BxP,
                                         deterministic=deterministic, rngs=rngs, mutable=["intermediates"])
        else:
            (_, state), logits = module.apply({"params": params}, *inputs, deterministic=deterministic, rngs=rngs,
                                              method=Bert.encode, mutable=["intermediates"]), None
        sown = state["intermediates"]["encoder"]
        attention = [None] + [sown[f"layer_{i}"]["attention"]["attention_probs"][0]
                              if self.k.attention_weight else None for i in range(module.config.num_layers)]
        return logits, sown["hidden_states"], attention

    def _frozen_stopped(self, params):
        labels = frozen_label(self.k)(params)
        return jax.tree.map(lambda p, label: jax.lax.stop_gradient(p) if label == "frozen" else p, params, labels)

    def keep_frozen(self, old, new):
        """After the update: frozen leaves are the old arrays themselves (bit for bit, -0.0 included; with the
        state donated XLA keeps their buffers instead of writing p + 0)."""
        labels = frozen_label(self.k)(old)
        return jax.tree.map(lambda o, n, label: o if label == "frozen" else n, old, new, labels)

    def loss(self, params, micro, keys, counts, teacher=None, deterministic: bool = False):
        k = self.k
        real_BxL = micro["attention_mask"].astype(jnp.float32)
        t_logits, t_hidden, t_attention = jax.tree.map(jax.lax.stop_gradient, self._forward(
            self.teacher, teacher, micro, deterministic=True))
        s_logits, s_hidden, s_attention = self._forward(self.student, self._frozen_stopped(params), micro,
                                                        deterministic=deterministic, rng=keys[0])
        zero = jnp.zeros((), jnp.float32)
        hidden = attention = logit = mlm = hits = zero
        for s, t in self.pairs:
            if k.hidden_weight:
                se_BxL = jnp.mean(jnp.square(s_hidden[s].astype(jnp.float32) - t_hidden[t].astype(jnp.float32)), -1)
                hidden += (se_BxL * real_BxL).sum()
            if k.attention_weight:
                distance_BxNxL = jnp.square(s_attention[s] - t_attention[t]).sum(-1)
                attention += (distance_BxNxL.mean(1) * real_BxL).sum()
        if "masked" in micro:
            masked = micro["masked"]
            if k.logit_weight:
                temperature = k.temperature
                t_log_p = jax.nn.log_softmax(t_logits / temperature, -1)
                s_log_p = jax.nn.log_softmax(s_logits / temperature, -1)
                kl_BxP = (jnp.exp(t_log_p) * (t_log_p - s_log_p)).sum(-1) * temperature ** 2
                logit = (kl_BxP * masked.weights_BxP).sum()
            if k.mlm_weight:
                loss_BxP, hit_BxP = cross_entropy_and_hit(s_logits, masked.labels_BxP)
                mlm, hits = (loss_BxP * masked.weights_BxP).sum(), (hit_BxP * masked.weights_BxP).sum()
        sums = DistillSums(hidden, attention, logit, mlm, hits)
        return self.total(sums, counts), sums

    def total(self, sums: DistillSums, counts: Counts):
        k, tokens, predictions = self.k, counts.tokens, counts.predictions
        return (k.hidden_weight * sums.hidden / tokens + k.attention_weight * sums.attention / tokens
                + k.logit_weight * sums.logit / predictions + k.mlm_weight * sums.mlm / predictions)

    def metrics(self, sums: DistillSums, counts):
        k, tokens, predictions = self.k, counts.tokens, counts.predictions
        values = {"loss": self.total(sums, counts), "tokens": tokens}
        if k.hidden_weight:
            values["hidden_loss"] = sums.hidden / tokens
        if k.attention_weight:
            values["attention_loss"] = sums.attention / tokens
        if k.logit_weight:
            values["logit_loss"] = sums.logit / predictions
        if k.mlm_weight:
            values["mlm_loss"] = sums.mlm / predictions
            values["mlm_accuracy"] = sums.mlm_hits / predictions
        return values
