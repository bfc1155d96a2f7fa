"""The shared building blocks: embeddings, self-attention, one Transformer block, the encoder stack, and the
MLM head and pooler of the families that have them. Every module takes the ModelConfig (for an ELECTRA
generator, `tower_view` of it); `config.ops` picks the plain-XLA or the CPU form of the few ops in `ops.py`.

Every parameter carries logical axis names ("vocab", "embed", "mlp", "heads") that
`mesh.logical_rules` maps onto mesh axes. Post-LayerNorm BERT layout, exact-erf GELU by default.
"""
from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
from jax.ad_checkpoint import checkpoint_name

from electra_jax.config import ModelConfig
from electra_jax.mesh import constrain
from electra_jax.models import ops as ops_lib
from electra_jax.models.splash import splash_attention
from electra_jax.precision import compute_dtype


ROWS = ("batch", None, None)  # an activation B x L x H: its rows split like the batch, the rest whole


def normal_init(stddev: float, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


def zeros_init(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def ones_init(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


def tower_view(config: ModelConfig, hidden_size: int, num_heads: int, intermediate_size: int,
               num_layers: int | None = None) -> ModelConfig:
    """The config of a tower with its own width and depth (ELECTRA's generator): the same model, other sizes."""
    return dataclasses.replace(config, hidden_size=hidden_size, num_heads=num_heads,
                               intermediate_size=intermediate_size, num_layers=num_layers or config.num_layers)


def LayerNorm(config: ModelConfig, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm with BERT's epsilon (Flax's default is 1e-6) and logical axis names."""
    return nn.LayerNorm(epsilon=config.layer_norm_eps, dtype=compute_dtype(config),
                        param_dtype=jnp.dtype(config.param_dtype), name=name,
                        scale_init=ones_init(("embed",)), bias_init=zeros_init(("embed",)))


def dense(config: ModelConfig, features: int, axes: tuple[str | None, str | None], name: str) -> nn.Dense:
    return nn.Dense(features, dtype=compute_dtype(config), param_dtype=jnp.dtype(config.param_dtype), name=name,
                    dot_general=ops_lib.dense_dot_general(config.ops),
                    kernel_init=normal_init(config.initializer_range, axes), bias_init=zeros_init(axes[1:]))


def _mix32(x_u32):
    """lowbias32 (C. Wellons' hash prospector): a bijection on uint32 with near-ideal avalanche."""
    x_u32 = (x_u32 ^ (x_u32 >> 16)) * jnp.uint32(0x21F0AAAD)
    x_u32 = (x_u32 ^ (x_u32 >> 15)) * jnp.uint32(0x735A2D97)
    return x_u32 ^ (x_u32 >> 15)


class Dropout(nn.Module):
    """Inverted dropout whose mask is a counter-based hash of (element index, two key-derived words).

    One Threefry draw per layer seeds the hash; every element's bit then costs a few integer ops that
    fuse with the select, where Threefry per element costs tens of ops. The mask
    depends only on the key and the element's index, so it is the same under any sharding and platform.
    """
    rate: float

    @nn.compact
    def __call__(self, x, deterministic: bool):
        if deterministic or self.rate == 0.0:
            return x
        seed_lo, seed_hi = jax.random.bits(self.make_rng("dropout"), (2,), jnp.uint32)
        index = jax.lax.iota(jnp.uint32, x.size).reshape(x.shape)
        bits = _mix32(_mix32(index ^ seed_lo) + seed_hi)
        keep = bits >= jnp.uint32(min(round(self.rate * 2 ** 32), 2 ** 32 - 1))
        return jnp.where(keep, x / (1.0 - self.rate), 0.0).astype(x.dtype)


class NormParams(nn.Module):
    """The scale and bias of a LayerNorm, as parameters `scale` and `bias` (nn.LayerNorm's names), readable
    as arrays so that ELECTRA's gradient-disentangled sharing can add a delta to them."""
    config: ModelConfig
    as_delta: bool = False  # zero-initialised (a delta added to another LayerNorm's parameters)

    def setup(self):
        c = self.config
        scale_init = zeros_init(("embed",)) if self.as_delta else ones_init(("embed",))
        self.scale = self.param("scale", scale_init, (c.embedding_size,), jnp.dtype(c.param_dtype))
        self.bias = self.param("bias", zeros_init(("embed",)), (c.embedding_size,), jnp.dtype(c.param_dtype))


def layer_norm(x, scale, bias, epsilon: float, dtype):
    """LayerNorm over the last axis in float32 (nn.LayerNorm's statistics), cast to `dtype`."""
    x32 = x.astype(jnp.float32)
    mean = x32.mean(-1, keepdims=True)
    variance = jnp.square(x32 - mean).mean(-1, keepdims=True)
    y = (x32 - mean) * jax.lax.rsqrt(variance + epsilon)
    return (y * scale.astype(jnp.float32) + bias.astype(jnp.float32)).astype(dtype)


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (no projection: that is per model).

    `tables()` gives its five parameters as arrays, and `__call__` can run on other tables of the same
    shapes: ELECTRA's gradient-disentangled sharing embeds with stop_gradient(shared) + delta, where the
    delta is an `Embeddings(as_delta=True)` (every table zero-initialised, the LayerNorm scale too)."""
    config: ModelConfig
    as_delta: bool = False

    def setup(self):
        c = self.config

        def table(num, axes):
            init = zeros_init(axes) if self.as_delta else normal_init(c.initializer_range, axes)
            return nn.Embed(num, c.embedding_size, dtype=compute_dtype(c), param_dtype=jnp.dtype(c.param_dtype),
                            embedding_init=init)
        # Attribute names are the parameter names (Flax `setup` naming).
        self.word_embeddings = table(c.vocab_size, ("vocab", "embed"))
        self.position_embeddings = table(c.max_position_embeddings, (None, "embed"))
        self.token_type_embeddings = table(c.type_vocab_size, (None, "embed"))
        self.LayerNorm = NormParams(c, self.as_delta)
        self.dropout = Dropout(c.dropout_rate)

    def tables(self) -> dict:
        return {"word_VxE": self.word_embeddings.embedding, "position_PxE": self.position_embeddings.embedding,
                "token_type_TxE": self.token_type_embeddings.embedding, "scale_E": self.LayerNorm.scale,
                "bias_E": self.LayerNorm.bias}

    def __call__(self, input_ids_BxL, segment_ids_BxL, deterministic: bool, tables: dict | None = None):
        c, t = self.config, tables or self.tables()
        # Whole tables on every device for the lookups (FSDP gathers them as it gathers any weight): a lookup
        # in a table split along its embedding axis would leave the rows split that way too.
        t = {name: constrain(table, (None,) * table.ndim) for name, table in t.items()}
        dtype = compute_dtype(c)
        positions_L = jnp.arange(input_ids_BxL.shape[1])
        x_BxLxE = (jnp.take(t["word_VxE"], input_ids_BxL, axis=0).astype(dtype)
                   + jnp.take(t["position_PxE"], positions_L, axis=0).astype(dtype)[None]
                   + jnp.take(t["token_type_TxE"], segment_ids_BxL, axis=0).astype(dtype))
        x_BxLxE = layer_norm(x_BxLxE, t["scale_E"], t["bias_E"], c.layer_norm_eps, dtype)
        return constrain(self.dropout(x_BxLxE, deterministic=deterministic), ROWS)

    def attend(self, x_BxPxE):
        """Logits against the word-embedding table (tied output layer)."""
        return self.word_embeddings.attend(x_BxPxE)


class SelfAttention(nn.Module):
    """Multi-head self-attention, by `config.attention`:
    einsum  ours: heads-first einsums, float32 softmax, attention dropout (plain XLA ops on every platform);
    jax     jax.nn.dot_product_attention's XLA implementation: the same unfused math in the (B, L, N, D) layout,
            no attention dropout;
    cudnn   cuDNN's fused flash attention (NVIDIA GPUs, bfloat16, no attention dropout). It masks padding by
            key lengths, so padding must come last in every row, as it does in prepared and fine-tuning batches.
    splash  Pallas splash attention (TPU v4 and later, no attention dropout, lengths a multiple of 128;
            models/splash.py).
    """
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxH, bias_Bx1x1xL, deterministic: bool):
        c = self.config
        dtype = compute_dtype(c)
        head_dim = c.hidden_size // c.num_heads
        batch, length = x_BxLxH.shape[:2]

        def project(name):  # plain (hidden x hidden) kernels, as HF stores them (transposed)
            y_BxLxH = dense(c, c.hidden_size, ("embed", "heads"), name)(x_BxLxH)
            y_BxLxH = checkpoint_name(y_BxLxH, ATTENTION_PROJECTION)
            return y_BxLxH.reshape(batch, length, c.num_heads, head_dim).transpose(0, 2, 1, 3)

        if c.attention == "splash":
            context_BxNxLxD = splash_attention(*(project(name) for name in ("query", "key", "value")), bias_Bx1x1xL)
            output_BxLxH = dense(c, c.hidden_size, ("heads", "embed"), "output")(
                context_BxNxLxD.transpose(0, 2, 1, 3).reshape(batch, length, c.hidden_size))
            return checkpoint_name(output_BxLxH, ATTENTION_PROJECTION)
        if c.attention != "einsum":
            q_BxLxNxD, k_BxLxNxD, v_BxLxNxD = (project(name).transpose(0, 2, 1, 3) for name in ("query", "key", "value"))
            if c.attention == "cudnn":  # cuDNN takes no (B, 1, 1, L) bias: the real keys are each row's first ones
                context_BxLxNxD = jax.nn.dot_product_attention(q_BxLxNxD, k_BxLxNxD, v_BxLxNxD,
                                                               key_value_seq_lengths=key_lengths(bias_Bx1x1xL),
                                                               implementation="cudnn")
            else:
                context_BxLxNxD = jax.nn.dot_product_attention(q_BxLxNxD, k_BxLxNxD, v_BxLxNxD,
                                                               bias=bias_Bx1x1xL.astype(q_BxLxNxD.dtype))
            output_BxLxH = dense(c, c.hidden_size, ("heads", "embed"), "output")(
                context_BxLxNxD.reshape(batch, length, c.hidden_size))
            return checkpoint_name(output_BxLxH, ATTENTION_PROJECTION)
        # Heads-first layout for the two attention matmuls: batched matmuls over contiguous (L, D) blocks,
        # which XLA's CPU backend runs several times faster than einsums over the (B, L, N, D) layout.
        q_BxNxLxD, k_BxNxLxD, v_BxNxLxD = (project(name) for name in ("query", "key", "value"))
        scores_BxNxLxL = jnp.einsum("bnqd,bnkd->bnqk", q_BxNxLxD, k_BxNxLxD) / jnp.sqrt(head_dim).astype(dtype)
        # Softmax in float32 even under bf16 compute: it is the numerically fragile part. (Scores accumulated in
        # float32 would make the backward pass multiply float32 gradients by bf16 keys and queries.)
        probs_BxNxLxL = jax.nn.softmax(scores_BxNxLxL.astype(jnp.float32) + bias_Bx1x1xL, axis=-1)
        self.sow("intermediates", "attention_probs", probs_BxNxLxL)  # kept only when asked for (distillation)
        probs_BxNxLxL = Dropout(c.attention_dropout_rate)(probs_BxNxLxL, deterministic=deterministic)
        context_BxNxLxD = jnp.einsum("bnqk,bnkd->bnqd", probs_BxNxLxL.astype(dtype), v_BxNxLxD)
        context_BxLxH = context_BxNxLxD.transpose(0, 2, 1, 3).reshape(batch, length, c.hidden_size)
        output_BxLxH = dense(c, c.hidden_size, ("heads", "embed"), "output")(context_BxLxH)
        return checkpoint_name(output_BxLxH, ATTENTION_PROJECTION)


class TransformerBlock(nn.Module):
    """One post-LN encoder layer; every model in the package stacks this block. `activation` is the HF
    hidden_act: "gelu" (ELECTRA, BERT) or "gelu_new" (ALBERT)."""
    config: ModelConfig
    activation: str = "gelu"

    @nn.compact
    def __call__(self, x_BxLxH, bias_Bx1x1xL, deterministic: bool):
        c = self.config
        attended = SelfAttention(c, name="attention")(x_BxLxH, bias_Bx1x1xL, deterministic)
        attended = Dropout(c.dropout_rate)(attended, deterministic=deterministic)
        x_BxLxH = LayerNorm(c, name="attention_LayerNorm")(x_BxLxH + attended)
        h_BxLxF = dense(c, c.intermediate_size, ("embed", "mlp"), "intermediate")(x_BxLxH)
        h_BxLxF = ops_lib.activation(self.activation, c.ops)(h_BxLxF)
        h_BxLxH = dense(c, c.hidden_size, ("mlp", "embed"), "output")(h_BxLxF)
        h_BxLxH = Dropout(c.dropout_rate)(h_BxLxH, deterministic=deterministic)
        return constrain(LayerNorm(c, name="output_LayerNorm")(x_BxLxH + h_BxLxH), ROWS)


def attention_bias(attention_mask_BxL, dtype=jnp.float32):
    """Additive mask: 0 where attended, a large negative number at padding."""
    return jnp.where(attention_mask_BxL[:, None, None, :] > 0, 0.0, jnp.finfo(dtype).min).astype(dtype)


def key_lengths(bias_Bx1x1xL):
    """Each row's count of attended keys (its length when padding comes last), int32 B."""
    return (bias_Bx1x1xL[:, 0, 0, :] == 0).sum(-1).astype(jnp.int32)


class Encoder(nn.Module):
    """`config.num_layers` TransformerBlocks, each with its own parameters (`layer_0`, `layer_1`, ...)."""
    config: ModelConfig

    @nn.compact
    def __call__(self, x_BxLxH, attention_mask_BxL, deterministic: bool):
        bias_Bx1x1xL = attention_bias(attention_mask_BxL)
        block = rematerialised(TransformerBlock, self.config.remat)
        # HF's `hidden_states`: the encoder's input, then every layer's output (kept only when asked for).
        self.sow("intermediates", "hidden_states", x_BxLxH)
        for i in range(self.config.num_layers):
            x_BxLxH = block(self.config, name=f"layer_{i}")(x_BxLxH, bias_Bx1x1xL, deterministic)
            self.sow("intermediates", "hidden_states", x_BxLxH)
        return x_BxLxH


# What a layer's backward pass recomputes (model.remat), each policy keeping a subset of the one before, so
# they are listed from the least recomputation to the most: "none" keeps every intermediate; "dots" keeps the
# outputs of the weight matmuls (not the batched attention matmuls) and recomputes attention and the
# elementwise work; "attention_projections" keeps only the query, key, value and attention-output
# projections and recomputes the feed-forward block too; "full" keeps only each layer's input.
ATTENTION_PROJECTION = "attention_projection"  # the checkpoint_name of those four projections
REMAT_POLICIES = {
    "none": None,
    "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "attention_projections": jax.checkpoint_policies.save_only_these_names(ATTENTION_PROJECTION),
    "full": jax.checkpoint_policies.nothing_saveable,
}


def rematerialised(block, policy: str):
    """`block` as is ("none"), or wrapped in `nn.remat` with the named policy."""
    if policy == "none":
        return block
    return nn.remat(block, static_argnums=(3,), policy=REMAT_POLICIES[policy])


def mlm_head(config: ModelConfig, prefix: str) -> tuple[nn.Dense, nn.LayerNorm]:
    """The MLM head's transform, `{prefix}_dense` (-> embedding size) and `{prefix}_LayerNorm`: BERT's and
    ALBERT's head ("predictions") and ELECTRA's generator head. The calling model assigns them (and its own
    output bias) in its setup, so the parameters keep the paths of the HF name tables."""
    return (dense(config, config.embedding_size, ("mlp", "embed"), f"{prefix}_dense"),
            LayerNorm(config, f"{prefix}_LayerNorm"))


def mlm_logits(config: ModelConfig, head: tuple[nn.Dense, nn.LayerNorm], bias_V, embeddings: Embeddings,
               hidden_BxPxH, activation: str = "gelu"):
    """dense -> GELU -> LayerNorm -> the tied word-embedding decoder + bias: vocabulary logits (float32)."""
    transform, norm = head
    h_BxPxE = norm(ops_lib.activation(activation, config.ops)(transform(hidden_BxPxH)))
    return ops_lib.add_bias(config.ops)(embeddings.attend(h_BxPxE), bias_V).astype(jnp.float32)


def output_bias(module: nn.Module, config: ModelConfig, name: str):
    """The MLM decoder's own bias, one per vocabulary entry."""
    return module.param(name, zeros_init(("vocab",)), (config.vocab_size,), jnp.dtype(config.param_dtype))


def pooler(config: ModelConfig) -> nn.Dense:
    """The dense layer of the tanh pooler over [CLS] (ALBERT, BERT)."""
    return dense(config, config.hidden_size, ("embed", "mlp"), "pooler")
