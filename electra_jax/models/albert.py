"""ALBERT: factorized embeddings and cross-layer parameter sharing, with the MLM and SOP heads.

As in google-research/albert and HF `AlbertForPreTraining`: embeddings of size E projected to the hidden
size by `embedding_hidden_mapping_in` (always present); `num_hidden_groups` groups of `inner_group_num`
Transformer blocks (the package's one block, with tanh-approximated GELU), layer i of `num_layers` running
group int(i / (num_layers / num_hidden_groups)); a tanh pooler over [CLS]; the MLM head
dense -> gelu_new -> LayerNorm -> decoder tied to the word embeddings plus its own bias; the SOP head a
2-way classifier on the pooled output.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from electra_jax.config import ModelConfig
from electra_jax.models.layers import (Dropout, Embeddings, TransformerBlock, attention_bias, dense, mlm_head,
                                       mlm_logits, output_bias, pooler, rematerialised)

ACTIVATION = "gelu_new"  # ALBERT's hidden_act


class AlbertEncoder(nn.Module):
    """The body (embeddings, shared blocks, pooler) that the pretraining and fine-tuning models extend."""
    config: ModelConfig

    def setup(self):
        c = self.config
        self.embeddings = Embeddings(c)
        self.embedding_hidden_mapping_in = dense(c, c.hidden_size, ("embed", "mlp"), "embedding_hidden_mapping_in")
        block = rematerialised(TransformerBlock, c.remat)
        self.groups = [[block(c, ACTIVATION, name=f"group_{g}_layer_{i}") for i in range(c.inner_group_num)]
                       for g in range(c.num_hidden_groups)]
        self.pooler = pooler(c)

    def encode(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic: bool = True):
        """The last hidden states, B x L x H."""
        c = self.config
        x_BxLxH = self.embedding_hidden_mapping_in(self.embeddings(input_ids_BxL, segment_ids_BxL, deterministic))
        bias_Bx1x1xL = attention_bias(attention_mask_BxL)
        for i in range(c.num_layers):
            for block in self.groups[int(i / (c.num_layers / c.num_hidden_groups))]:
                x_BxLxH = block(x_BxLxH, bias_Bx1x1xL, deterministic)
        return x_BxLxH

    def pool(self, hidden_BxLxH):
        """The tanh-pooled [CLS] state, B x H."""
        return jnp.tanh(self.pooler(hidden_BxLxH[:, 0]))


class Albert(AlbertEncoder):
    def setup(self):
        super().setup()
        c = self.config
        self.predictions_dense, self.predictions_LayerNorm = mlm_head(c, "predictions")
        self.predictions_bias = output_bias(self, c, "predictions_bias")
        self.sop_dropout = Dropout(c.dropout_rate)
        self.sop_classifier = dense(c, 2, ("mlp", None), "sop_classifier")

    def mlm_logits(self, hidden_BxPxH):
        """Vocabulary logits of the given hidden states (float32)."""
        head = (self.predictions_dense, self.predictions_LayerNorm)
        return mlm_logits(self.config, head, self.predictions_bias, self.embeddings, hidden_BxPxH, ACTIVATION)

    def sop_logits(self, hidden_BxLxH, deterministic: bool = True):
        """Sentence-order logits (0: in order, 1: swapped) from the tanh-pooled [CLS] state, B x 2 (float32)."""
        pooled_BxH = self.sop_dropout(self.pool(hidden_BxLxH), deterministic=deterministic)
        return self.sop_classifier(pooled_BxH).astype(jnp.float32)

    def __call__(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, positions_BxP,
                 deterministic: bool = True):
        """(MLM logits at `positions_BxP`: B x P x V, SOP logits: B x 2), from one encoder pass."""
        hidden_BxLxH = self.encode(input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic)
        hidden_BxPxH = jnp.take_along_axis(hidden_BxLxH, positions_BxP[..., None], axis=1)
        return self.mlm_logits(hidden_BxPxH), self.sop_logits(hidden_BxLxH, deterministic)
