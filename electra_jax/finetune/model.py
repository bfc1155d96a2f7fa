"""Task heads on a pretrained body, in Hugging Face's layouts.

Token tasks (every body): dropout, then one linear classifier per token (`…ForTokenClassification`).
Sentence tasks: on ELECTRA, `ElectraClassificationHead` ([CLS] -> dropout -> dense -> gelu -> dropout ->
out_proj); on ALBERT and BERT, the body's tanh pooler -> dropout -> classifier (`…ForSequenceClassification`).
Each classifier extends its body module, so the body's parameters keep their pretraining names and a
run's parameters initialise them directly.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from electra_jax.config import ModelConfig
from electra_jax.models import ops
from electra_jax.models.albert import AlbertEncoder
from electra_jax.models.bert import BertEncoder
from electra_jax.models.electra import DiscriminatorEncoder
from electra_jax.models.layers import Dropout, dense


def _dense(config: ModelConfig, features: int, name: str) -> nn.Dense:
    return dense(config, features, ("embed", None), name)


class ElectraClassifier(DiscriminatorEncoder):
    num_labels: int
    per_token: bool

    def setup(self):
        super().setup()
        c = self.config
        self.dropout = Dropout(c.dropout_rate)
        if self.per_token:
            self.classifier = _dense(c, self.num_labels, "classifier")
        else:
            self.classifier_dense = _dense(c, c.hidden_size, "classifier_dense")
            self.classifier_out_proj = _dense(c, self.num_labels, "classifier_out_proj")

    def __call__(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic: bool = True):
        """Label logits (float32): B x L x labels per token, or B x labels per sequence."""
        hidden_BxLxH = self.encode(input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic)
        if self.per_token:
            return self.classifier(self.dropout(hidden_BxLxH, deterministic=deterministic)).astype(jnp.float32)
        x_BxH = self.dropout(hidden_BxLxH[:, 0], deterministic=deterministic)
        x_BxH = self.dropout(ops.activation("gelu", self.config.ops)(self.classifier_dense(x_BxH)), deterministic=deterministic)
        return self.classifier_out_proj(x_BxH).astype(jnp.float32)


class _PooledHead:
    """Token head, or the body's tanh pooler -> dropout -> classifier (ALBERT's and BERT's sentence head)."""

    def setup(self):
        super().setup()
        self.dropout = Dropout(self.config.dropout_rate)
        self.classifier = _dense(self.config, self.num_labels, "classifier")

    def __call__(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic: bool = True):
        """Label logits (float32): B x L x labels per token, or B x labels from the pooled [CLS] state."""
        hidden_BxLxH = self.encode(input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic)
        features = hidden_BxLxH if self.per_token else self.pool(hidden_BxLxH)
        return self.classifier(self.dropout(features, deterministic=deterministic)).astype(jnp.float32)


class AlbertClassifier(_PooledHead, AlbertEncoder):
    num_labels: int
    per_token: bool


class BertClassifier(_PooledHead, BertEncoder):
    num_labels: int
    per_token: bool


HEAD_NAMES = ("dropout", "classifier", "classifier_dense", "classifier_out_proj")  # everything else is the body

