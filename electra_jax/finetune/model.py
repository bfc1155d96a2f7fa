"""Token classification on the ELECTRA discriminator: HF `ElectraForTokenClassification`'s layout
(the body, dropout, one linear classifier per token). Parameter names match the pretraining tree, so a
run's `embeddings` and `discriminator` subtrees are its initialisation."""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from electra_jax.config import ModelConfig
from electra_jax.models.electra import Tower
from electra_jax.models.layers import Dropout, dense, embeddings_for

BODY = ("embeddings", "discriminator")  # the subtrees taken from a pretraining run


class TokenClassifier(nn.Module):
    config: ModelConfig
    num_labels: int

    def setup(self):
        c = self.config
        self.embeddings = embeddings_for(c)
        self.discriminator = Tower(c, c.hidden_size, c.num_heads, c.intermediate_size)
        self.dropout = Dropout(c.dropout_rate)
        self.classifier = dense(self.num_labels, ("embed", None), c.initializer_range, jnp.dtype(c.dtype),
                                jnp.dtype(c.param_dtype), "classifier")

    def __call__(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic: bool = True):
        """Label logits per token, B x L x labels (float32)."""
        embedded = self.embeddings(input_ids_BxL, segment_ids_BxL, deterministic)
        hidden_BxLxH = self.discriminator(embedded, attention_mask_BxL, deterministic)
        return self.classifier(self.dropout(hidden_BxLxH, deterministic=deterministic)).astype(jnp.float32)
