"""ELECTRA: a small generator and a discriminator sharing one embedding module.

Shared (as in google-research/electra): word, position and token-type embeddings and the embedding
LayerNorm. Each tower has its own `embeddings_project` when embedding_size != its hidden size. The
generator's output layer is the shared word-embedding table (tied) plus its own bias.
"""
from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

from electra_jax.config import ModelConfig
from electra_jax.models.layers import ACTIVATIONS, Encoder, LayerNorm, add_bias, dense, embeddings_for, zeros_init


class Tower(nn.Module):
    """Optional embedding projection + encoder stack, for the generator or the discriminator."""
    config: ModelConfig
    hidden_size: int
    num_heads: int
    intermediate_size: int

    @nn.compact
    def __call__(self, embedded_BxLxE, attention_mask_BxL, deterministic: bool):
        c = self.config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        x = embedded_BxLxE
        if c.embedding_size != self.hidden_size:
            x = dense(self.hidden_size, ("embed", "mlp"), c.initializer_range, dtype, param_dtype,
                      "embeddings_project")(x)
        return Encoder(c.num_layers, self.hidden_size, self.num_heads, self.intermediate_size, "gelu",
                       c.initializer_range, c.layer_norm_eps, c.dropout_rate, c.attention_dropout_rate,
                       c.remat, dtype, param_dtype, c.attention, name="encoder")(x, attention_mask_BxL,
                                                                                 deterministic)


class DiscriminatorEncoder(nn.Module):
    """The discriminator's body alone (what fine-tuning starts from), under the pretraining names."""
    config: ModelConfig

    def setup(self):
        c = self.config
        self.embeddings = embeddings_for(c)
        self.discriminator = Tower(c, c.hidden_size, c.num_heads, c.intermediate_size)

    def encode(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic: bool = True):
        """The last hidden states, B x L x H."""
        embedded = self.embeddings(input_ids_BxL, segment_ids_BxL, deterministic)
        return self.discriminator(embedded, attention_mask_BxL, deterministic)


class Electra(nn.Module):
    config: ModelConfig

    def setup(self):
        c = self.config
        dtype, param_dtype = jnp.dtype(c.dtype), jnp.dtype(c.param_dtype)
        self.embeddings = embeddings_for(c)
        self.generator = Tower(c, c.generator_hidden_size, c.generator_num_heads, c.generator_intermediate_size)
        self.discriminator = Tower(c, c.hidden_size, c.num_heads, c.intermediate_size)
        # Generator head: dense(hidden -> embedding) -> gelu -> LayerNorm -> tied decoder + own bias.
        self.generator_predictions_dense = dense(c.embedding_size, ("mlp", "embed"), c.initializer_range,
                                                 dtype, param_dtype, "generator_predictions_dense")
        self.generator_predictions_LayerNorm = LayerNorm(c.layer_norm_eps, dtype, param_dtype,
                                                         "generator_predictions_LayerNorm")
        self.generator_lm_head_bias = self.param("generator_lm_head_bias", zeros_init(("vocab",)),
                                                 (c.vocab_size,), param_dtype)
        # Discriminator head: dense(hidden -> hidden) -> gelu -> dense(hidden -> 1).
        self.discriminator_predictions_dense = dense(c.hidden_size, ("embed", "mlp"), c.initializer_range,
                                                     dtype, param_dtype, "discriminator_predictions_dense")
        self.discriminator_predictions_prediction = dense(1, ("mlp", None), c.initializer_range, dtype,
                                                          param_dtype, "discriminator_predictions_prediction")

    def generator_logits(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, positions_BxP,
                         deterministic: bool = True):
        """Generator logits only at `positions_BxP` (the masked positions): B x P x vocab, float32."""
        embedded = self.embeddings(input_ids_BxL, segment_ids_BxL, deterministic)
        hidden_BxLxG = self.generator(embedded, attention_mask_BxL, deterministic)
        hidden_BxPxG = jnp.take_along_axis(hidden_BxLxG, positions_BxP[..., None], axis=1)
        h = ACTIVATIONS["gelu"](self.generator_predictions_dense(hidden_BxPxG))
        h_BxPxE = self.generator_predictions_LayerNorm(h)
        logits_BxPxV = add_bias(self.embeddings.attend(h_BxPxE), self.generator_lm_head_bias)
        return logits_BxPxV.astype(jnp.float32)

    def discriminator_logits(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL,
                             deterministic: bool = True):
        """One replaced-token logit per position: B x L, float32."""
        embedded = self.embeddings(input_ids_BxL, segment_ids_BxL, deterministic)
        hidden_BxLxH = self.discriminator(embedded, attention_mask_BxL, deterministic)
        h = ACTIVATIONS["gelu"](self.discriminator_predictions_dense(hidden_BxLxH))
        return self.discriminator_predictions_prediction(h)[..., 0].astype(jnp.float32)

    def __call__(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, positions_BxP,
                 deterministic: bool = True):
        """Both towers (used for init): (generator logits at positions, discriminator logits)."""
        return (self.generator_logits(input_ids_BxL, segment_ids_BxL, attention_mask_BxL, positions_BxP,
                                      deterministic),
                self.discriminator_logits(input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic))
