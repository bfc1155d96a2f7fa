"""BERT: the package's embeddings and encoder stack (no embedding projection: BERT's embeddings have the
hidden size), a tanh pooler over [CLS], and the MLM head dense -> gelu -> LayerNorm -> decoder tied to the
word embeddings plus its own bias, as HF `BertForMaskedLM` / `BertModel` lay them out. BERT models come
into the package by import (e.g. multilingual BERT as a distillation teacher) or as distilled students.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from electra_jax.config import ModelConfig
from electra_jax.models.layers import ACTIVATIONS, Encoder, LayerNorm, add_bias, dense, embeddings_for, zeros_init


class BertEncoder(nn.Module):
    """The body (embeddings, encoder, pooler) that the MLM and fine-tuning models extend."""
    config: ModelConfig

    def setup(self):
        c = self.config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.embeddings = embeddings_for(c)
        self.encoder = Encoder(c.num_layers, c.hidden_size, c.num_heads, c.intermediate_size, "gelu",
                               c.initializer_range, c.layer_norm_eps, c.dropout_rate, c.attention_dropout_rate,
                               c.remat, dtype, param_dtype, c.attention)
        self.pooler = dense(c.hidden_size, ("embed", "mlp"), c.initializer_range, dtype, param_dtype, "pooler")

    def encode(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic: bool = True):
        """The last hidden states, B x L x H."""
        embedded_BxLxH = self.embeddings(input_ids_BxL, segment_ids_BxL, deterministic)
        return self.encoder(embedded_BxLxH, attention_mask_BxL, deterministic)

    def pool(self, hidden_BxLxH):
        """The tanh-pooled [CLS] state, B x H."""
        return jnp.tanh(self.pooler(hidden_BxLxH[:, 0]))


class Bert(BertEncoder):
    def setup(self):
        super().setup()
        c = self.config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.predictions_dense = dense(c.hidden_size, ("mlp", "embed"), c.initializer_range, dtype, param_dtype,
                                       "predictions_dense")
        self.predictions_LayerNorm = LayerNorm(c.layer_norm_eps, dtype, param_dtype, "predictions_LayerNorm")
        self.predictions_bias = self.param("predictions_bias", zeros_init(("vocab",)), (c.vocab_size,), param_dtype)

    def mlm_logits(self, hidden_BxPxH):
        """Vocabulary logits of the given hidden states (float32)."""
        h = ACTIVATIONS["gelu"](self.predictions_dense(hidden_BxPxH))
        logits_BxPxV = add_bias(self.embeddings.attend(self.predictions_LayerNorm(h)), self.predictions_bias)
        return logits_BxPxV.astype(jnp.float32)

    def __call__(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, positions_BxP,
                 deterministic: bool = True):
        """MLM logits at `positions_BxP` (B x P x V); the pooler is created too (init), as BERT carries it."""
        hidden_BxLxH = self.encode(input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic)
        self.pool(hidden_BxLxH)
        hidden_BxPxH = jnp.take_along_axis(hidden_BxLxH, positions_BxP[..., None], axis=1)
        return self.mlm_logits(hidden_BxPxH)
