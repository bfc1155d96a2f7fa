"""BERT: the package's embeddings and encoder stack (no embedding projection: BERT's embeddings have the
hidden size), a tanh pooler over [CLS], and the MLM head dense -> gelu -> LayerNorm -> decoder tied to the
word embeddings plus its own bias, as HF `BertForMaskedLM` / `BertModel` lay them out. BERT models come
into the package by import (e.g. multilingual BERT as a distillation teacher) or as distilled students.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from electra_jax.config import ModelConfig
from electra_jax.models.layers import Embeddings, Encoder, mlm_head, mlm_logits, output_bias, pooler


class BertEncoder(nn.Module):
    """The body (embeddings, encoder, pooler) that the MLM and fine-tuning models extend."""
    config: ModelConfig

    def setup(self):
        self.embeddings = Embeddings(self.config)
        self.encoder = Encoder(self.config)
        self.pooler = pooler(self.config)

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
        self.predictions_dense, self.predictions_LayerNorm = mlm_head(self.config, "predictions")
        self.predictions_bias = output_bias(self, self.config, "predictions_bias")

    def mlm_logits(self, hidden_BxPxH):
        """Vocabulary logits of the given hidden states (float32)."""
        head = (self.predictions_dense, self.predictions_LayerNorm)
        return mlm_logits(self.config, head, self.predictions_bias, self.embeddings, hidden_BxPxH)

    def __call__(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, positions_BxP,
                 deterministic: bool = True):
        """MLM logits at `positions_BxP` (B x P x V); the pooler is created too (init), as BERT carries it."""
        hidden_BxLxH = self.encode(input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic)
        self.pool(hidden_BxLxH)
        hidden_BxPxH = jnp.take_along_axis(hidden_BxLxH, positions_BxP[..., None], axis=1)
        return self.mlm_logits(hidden_BxPxH)
