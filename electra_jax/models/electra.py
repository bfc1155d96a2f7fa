"""ELECTRA: a small generator and a discriminator, and the embeddings between them.

`embedding_sharing` (objective.embedding_sharing) says what the towers share of the word, position and
token-type embeddings and the embedding LayerNorm:
- full (google-research/electra): one module, `embeddings`; both losses train it.
- gdes (DeBERTaV3's gradient-disentangled embedding sharing): `embeddings` (E) is the generator's; the
  discriminator embeds with stop_gradient(E) + `discriminator_embeddings_delta` (zero at the start), so E
  learns from the generator's MLM loss only and the delta from the discriminator's RTD loss only.
- none: `embeddings` is the discriminator's, `generator_embeddings` the generator's.
`embeddings` is always what the fine-tuning body reads once `tower_params` has folded a delta in.
Each tower has its own `embeddings_project` when embedding_size != its hidden size. The generator's output
layer is its word-embedding table (tied) plus its own bias.
"""
from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from electra_jax.config import ModelConfig
from electra_jax.models import ops
from electra_jax.models.layers import Embeddings, Encoder, dense, mlm_head, mlm_logits, output_bias, tower_view

DELTA = "discriminator_embeddings_delta"  # gdes: the discriminator's delta on the shared embeddings
GENERATOR_EMBEDDINGS = "generator_embeddings"  # none: the generator's own


def generator_view(config: ModelConfig) -> ModelConfig:
    return tower_view(config, config.generator_hidden_size, config.generator_num_heads,
                      config.generator_intermediate_size, config.generator_num_layers)


def tower_params(params: dict, sharing: str, tower: str) -> dict:
    """`params` with `embeddings` holding `tower`'s own embedding tables (the discriminator's E + delta under
    gdes, the generator's table under none) and the other tower's tables left out: what an HF tower or the
    fine-tuning body reads. The other entries are `params`' own (not copies)."""
    view = {name: value for name, value in params.items() if name not in (DELTA, GENERATOR_EMBEDDINGS)}
    if sharing == "gdes" and tower == "discriminator":
        view["embeddings"] = jax.tree.map(lambda shared, delta: shared + delta, params["embeddings"], params[DELTA])
    elif sharing == "none" and tower == "generator":
        view["embeddings"] = params[GENERATOR_EMBEDDINGS]
    return view


def set_tower_embeddings(params: dict, sharing: str, tower: str, embeddings: dict) -> None:
    """The inverse of `tower_params` for the embeddings: store `tower`'s own tables in `params` (under gdes,
    the discriminator's as its delta from the shared E, so give the generator's first)."""
    if sharing == "gdes" and tower == "discriminator":
        params[DELTA] = jax.tree.map(lambda own, shared: own - shared, embeddings, params["embeddings"])
    elif sharing == "none" and tower == "generator":
        params[GENERATOR_EMBEDDINGS] = embeddings
    else:
        params["embeddings"] = embeddings


class Tower(nn.Module):
    """Optional embedding projection + encoder stack, for the generator or the discriminator (its config is
    the tower's view: its own hidden size, heads and feed-forward size)."""
    config: ModelConfig

    @nn.compact
    def __call__(self, embedded_BxLxE, attention_mask_BxL, deterministic: bool):
        c = self.config
        x = embedded_BxLxE
        if c.embedding_size != c.hidden_size:
            x = dense(c, c.hidden_size, ("embed", "mlp"), "embeddings_project")(x)
        return Encoder(c, name="encoder")(x, attention_mask_BxL, deterministic)


class DiscriminatorEncoder(nn.Module):
    """The discriminator's body alone (what fine-tuning starts from), under the pretraining names."""
    config: ModelConfig

    def setup(self):
        self.embeddings = Embeddings(self.config)
        self.discriminator = Tower(self.config)

    def encode(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic: bool = True):
        """The last hidden states, B x L x H."""
        embedded = self.embeddings(input_ids_BxL, segment_ids_BxL, deterministic)
        return self.discriminator(embedded, attention_mask_BxL, deterministic)


class Electra(nn.Module):
    config: ModelConfig
    embedding_sharing: str = "full"  # full | gdes | none: see the module's docstring

    def setup(self):
        c = self.config
        self.embeddings = Embeddings(c)
        if self.embedding_sharing == "gdes":
            self.discriminator_embeddings_delta = Embeddings(c, as_delta=True)
        elif self.embedding_sharing == "none":
            self.generator_embeddings = Embeddings(c)
        self.generator = Tower(generator_view(c))
        self.discriminator = Tower(c)
        # Generator head: dense(hidden -> embedding) -> gelu -> LayerNorm -> tied decoder + own bias.
        self.generator_predictions_dense, self.generator_predictions_LayerNorm = mlm_head(c, "generator_predictions")
        self.generator_lm_head_bias = output_bias(self, c, "generator_lm_head_bias")
        # Discriminator head: dense(hidden -> hidden) -> gelu -> dense(hidden -> 1).
        self.discriminator_predictions_dense = dense(c, c.hidden_size, ("embed", "mlp"),
                                                     "discriminator_predictions_dense")
        self.discriminator_predictions_prediction = dense(c, 1, ("mlp", None), "discriminator_predictions_prediction")

    def generator_logits(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, positions_BxP,
                         deterministic: bool = True):
        """Generator logits only at `positions_BxP` (the masked positions): B x P x vocab, float32."""
        embeddings = self.generator_embeddings if self.embedding_sharing == "none" else self.embeddings
        embedded = embeddings(input_ids_BxL, segment_ids_BxL, deterministic)
        hidden_BxLxG = self.generator(embedded, attention_mask_BxL, deterministic)
        hidden_BxPxG = jnp.take_along_axis(hidden_BxLxG, positions_BxP[..., None], axis=1)
        head = (self.generator_predictions_dense, self.generator_predictions_LayerNorm)
        return mlm_logits(self.config, head, self.generator_lm_head_bias, embeddings, hidden_BxPxG)

    def discriminator_embedded(self, input_ids_BxL, segment_ids_BxL, deterministic: bool):
        """The discriminator's embedding output, B x L x E."""
        if self.embedding_sharing != "gdes":
            return self.embeddings(input_ids_BxL, segment_ids_BxL, deterministic)
        delta = self.discriminator_embeddings_delta
        tables = jax.tree.map(lambda shared, own: jax.lax.stop_gradient(shared) + own, self.embeddings.tables(),
                              delta.tables())
        return delta(input_ids_BxL, segment_ids_BxL, deterministic, tables=tables)

    def discriminator_logits(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL,
                             deterministic: bool = True):
        """One replaced-token logit per position: B x L, float32."""
        embedded = self.discriminator_embedded(input_ids_BxL, segment_ids_BxL, deterministic)
        hidden_BxLxH = self.discriminator(embedded, attention_mask_BxL, deterministic)
        h = ops.activation("gelu", self.config.ops)(self.discriminator_predictions_dense(hidden_BxLxH))
        return self.discriminator_predictions_prediction(h)[..., 0].astype(jnp.float32)

    def __call__(self, input_ids_BxL, segment_ids_BxL, attention_mask_BxL, positions_BxP,
                 deterministic: bool = True):
        """Both towers (used for init): (generator logits at positions, discriminator logits)."""
        return (self.generator_logits(input_ids_BxL, segment_ids_BxL, attention_mask_BxL, positions_BxP,
                                      deterministic),
                self.discriminator_logits(input_ids_BxL, segment_ids_BxL, attention_mask_BxL, deterministic))
