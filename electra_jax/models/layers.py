"""The shared building blocks: embeddings, self-attention, feed-forward and one Transformer block.

Every parameter carries logical axis names ("vocab", "embed", "mlp", "heads") that
`mesh.logical_rules` maps onto mesh axes. Post-LayerNorm BERT layout, exact-erf GELU by default.
"""
from __future__ import annotations

from typing import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

Dtype = jnp.dtype


def normal_init(stddev: float, axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.normal(stddev), axes)


def zeros_init(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.zeros_init(), axes)


def ones_init(axes: tuple[str, ...]):
    return nn.with_logical_partitioning(nn.initializers.ones_init(), axes)


_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_TANH_SCALE = 0.7978845608028654  # sqrt(2 / pi)


@jax.custom_vjp
def gelu_exact(x):
    """x * Phi(x) through erf (on CPU XLA's erf costs a third of the erfc that jax.nn.gelu uses)."""
    return x * (0.5 + 0.5 * jax.lax.erf(x * _SQRT_HALF))


def _gelu_exact_fwd(x):
    # The derivative is made while erf's argument is at hand, so the backward pass is one multiply.
    cdf = 0.5 + 0.5 * jax.lax.erf(x * _SQRT_HALF)
    return x * cdf, cdf + x * jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI


def _times_derivative(derivative, grad):
    return (grad * derivative,)


gelu_exact.defvjp(_gelu_exact_fwd, _times_derivative)


@jax.custom_vjp
def gelu_tanh(x):
    """The tanh approximation (HF "gelu_new"), its derivative made in the forward pass."""
    return _gelu_tanh_fwd(x)[0]


def _gelu_tanh_fwd(x):
    tanh = jnp.tanh(_TANH_SCALE * (x + 0.044715 * x * x * x))
    derivative = 0.5 * (1 + tanh) + 0.5 * x * (1 - tanh * tanh) * _TANH_SCALE * (1 + 3 * 0.044715 * x * x)
    return 0.5 * x * (1 + tanh), derivative


gelu_tanh.defvjp(_gelu_tanh_fwd, _times_derivative)


ACTIVATIONS: dict[str, Callable] = {
    "gelu": gelu_exact,  # ELECTRA / BERT (HF "gelu")
    "gelu_new": gelu_tanh,  # ALBERT (HF "gelu_new")
}


def LayerNorm(eps: float, dtype, param_dtype, name: str | None = None) -> nn.LayerNorm:
    """LayerNorm with BERT's epsilon (Flax's default is 1e-6) and logical axis names."""
    return nn.LayerNorm(epsilon=eps, dtype=dtype, param_dtype=param_dtype, name=name,
                        scale_init=ones_init(("embed",)), bias_init=zeros_init(("embed",)))


def _mix32(x_u32):
    """lowbias32 (C. Wellons' hash prospector): a bijection on uint32 with near-ideal avalanche."""
    x_u32 = (x_u32 ^ (x_u32 >> 16)) * jnp.uint32(0x21F0AAAD)
    x_u32 = (x_u32 ^ (x_u32 >> 15)) * jnp.uint32(0x735A2D97)
    return x_u32 ^ (x_u32 >> 15)


class Dropout(nn.Module):
    """Inverted dropout whose mask is a counter-based hash of (element index, two key-derived words).

    One Threefry draw per layer seeds the hash; every element's bit then costs a few integer ops that
    fuse with the select (Threefry per element cost ~0.2 s of a 2.2 s ELECTRA-small CPU step). The mask
    depends only on the key and the element's index, so it is the same under any sharding.
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


@jax.custom_vjp
def _matmul(x_MxK, w_KxN):
    return x_MxK @ w_KxN


def _matmul_fwd(x_MxK, w_KxN):
    return x_MxK @ w_KxN, (x_MxK, w_KxN)


def _matmul_bwd(residuals, grad_MxN):
    x_MxK, w_KxN = residuals
    w_rows, w_cols = w_KxN.shape
    if w_rows > w_cols and jax.default_backend() == "cpu":
        # XLA's CPU matmul makes a tall-and-narrow weight gradient (e.g. 1024 x 256) at half the speed
        # of its wide transpose; the barrier keeps XLA from folding the transpose back into the dot.
        grad_w = jax.lax.optimization_barrier(grad_MxN.T @ x_MxK).T
    else:
        grad_w = x_MxK.T @ grad_MxN
    return grad_MxN @ w_KxN.T, grad_w


_matmul.defvjp(_matmul_fwd, _matmul_bwd)


def _dense_dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
    """`nn.Dense`'s contraction (last axis of x with the kernel's first) through `_matmul`."""
    del dimension_numbers, precision, preferred_element_type  # nn.Dense always asks for this one contraction
    return _matmul(x.reshape(-1, x.shape[-1]), kernel).reshape(*x.shape[:-1], kernel.shape[-1])


def dense(features: int, axes: tuple[str, str], init_std: float, dtype, param_dtype, name: str) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=param_dtype, name=name, dot_general=_dense_dot_general,
                    kernel_init=normal_init(init_std, axes), bias_init=zeros_init(axes[1:]))


@jax.custom_vjp
def add_bias(x, bias):
    """x + bias (over the last axis), whose bias gradient is a vector-matrix product: on CPU, XLA's
    reduce over the 640 rows of a 640 x 30522 generator-logit gradient took 50 ms, the product 1.5."""
    return x + bias.astype(x.dtype)


def _add_bias_fwd(x, bias):
    return add_bias(x, bias), bias


def _add_bias_bwd(bias, grad):
    rows = grad.reshape(-1, grad.shape[-1])
    bias_grad = jnp.dot(jnp.ones(rows.shape[0], rows.dtype), rows, preferred_element_type=jnp.float32)
    return grad, bias_grad.astype(bias.dtype)


add_bias.defvjp(_add_bias_fwd, _add_bias_bwd)


class Embeddings(nn.Module):
    """Word + position + token-type embeddings, LayerNorm, dropout (no projection: that is per model)."""
    vocab_size: int
    embedding_size: int
    max_positions: int
    type_vocab_size: int
    init_std: float = 0.02
    eps: float = 1e-12
    dropout_rate: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32

    def setup(self):
        def table(num, axes):
            return nn.Embed(num, self.embedding_size, dtype=self.dtype, param_dtype=self.param_dtype,
                            embedding_init=normal_init(self.init_std, axes))
        # Attribute names are the parameter names (Flax `setup` naming).
        self.word_embeddings = table(self.vocab_size, ("vocab", "embed"))
        self.position_embeddings = table(self.max_positions, (None, "embed"))
        self.token_type_embeddings = table(self.type_vocab_size, (None, "embed"))
        self.LayerNorm = LayerNorm(self.eps, self.dtype, self.param_dtype)
        self.dropout = Dropout(self.dropout_rate)

    def __call__(self, input_ids_BxL, segment_ids_BxL, deterministic: bool):
        positions_L = jnp.arange(input_ids_BxL.shape[1])
        x_BxLxE = (self.word_embeddings(input_ids_BxL) + self.position_embeddings(positions_L)[None]
                   + self.token_type_embeddings(segment_ids_BxL))
        return self.dropout(self.LayerNorm(x_BxLxE), deterministic=deterministic)

    def attend(self, x_BxPxE):
        """Logits against the word-embedding table (tied output layer)."""
        return self.word_embeddings.attend(x_BxPxE)


def embeddings_for(config) -> Embeddings:
    """The embedding module of a model config (any `ModelConfig`)."""
    return Embeddings(config.vocab_size, config.embedding_size, config.max_position_embeddings,
                      config.type_vocab_size, config.initializer_range, config.layer_norm_eps, config.dropout_rate,
                      jnp.dtype(config.dtype), jnp.dtype(config.param_dtype))


class SelfAttention(nn.Module):
    hidden_size: int
    num_heads: int
    init_std: float = 0.02
    dropout_rate: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    implementation: str = "einsum"  # or "jax" / "cudnn": jax.nn.dot_product_attention (no attention dropout)

    @nn.compact
    def __call__(self, x_BxLxH, bias_Bx1x1xL, deterministic: bool):
        head_dim = self.hidden_size // self.num_heads

        batch, length = x_BxLxH.shape[:2]

        def project(name):  # plain (hidden x hidden) kernels, as HF stores them (transposed)
            y_BxLxH = dense(self.hidden_size, ("embed", "heads"), self.init_std, self.dtype, self.param_dtype, name)(x_BxLxH)
            return y_BxLxH.reshape(batch, length, self.num_heads, head_dim).transpose(0, 2, 1, 3)

        if self.implementation != "einsum":  # XLA's fused attention, or cuDNN's flash attention on GPUs
            q_BxLxNxD, k_BxLxNxD, v_BxLxNxD = (project(name).transpose(0, 2, 1, 3) for name in ("query", "key", "value"))
            context_BxLxNxD = jax.nn.dot_product_attention(
                q_BxLxNxD, k_BxLxNxD, v_BxLxNxD, bias=bias_Bx1x1xL.astype(q_BxLxNxD.dtype),
                implementation=None if self.implementation == "jax" else "cudnn")
            return dense(self.hidden_size, ("heads", "embed"), self.init_std, self.dtype, self.param_dtype,
                         "output")(context_BxLxNxD.reshape(batch, length, self.hidden_size))
        # Heads-first layout for the two attention matmuls: on CPU the attention forward ran in 6 ms
        # instead of 30 (batch 32 x 128, 4 heads) compared with einsums over the (B, L, N, D) layout.
        q_BxNxLxD, k_BxNxLxD, v_BxNxLxD = (project(name) for name in ("query", "key", "value"))
        scores_BxNxLxL = jnp.einsum("bnqd,bnkd->bnqk", q_BxNxLxD, k_BxNxLxD) / jnp.sqrt(head_dim).astype(self.dtype)
        # Softmax in float32 even under bf16 compute: it is the numerically fragile part.
        probs_BxNxLxL = jax.nn.softmax(scores_BxNxLxL.astype(jnp.float32) + bias_Bx1x1xL, axis=-1)
        self.sow("intermediates", "attention_probs", probs_BxNxLxL)  # kept only when asked for (distillation)
        probs_BxNxLxL = Dropout(self.dropout_rate)(probs_BxNxLxL, deterministic=deterministic)
        context_BxNxLxD = jnp.einsum("bnqk,bnkd->bnqd", probs_BxNxLxL.astype(self.dtype), v_BxNxLxD)
        context_BxLxH = context_BxNxLxD.transpose(0, 2, 1, 3).reshape(batch, length, self.hidden_size)
        return dense(self.hidden_size, ("heads", "embed"), self.init_std, self.dtype, self.param_dtype,
                     "output")(context_BxLxH)


class TransformerBlock(nn.Module):
    """One post-LN encoder layer; every model in the package stacks this block."""
    hidden_size: int
    num_heads: int
    intermediate_size: int
    activation: str = "gelu"
    init_std: float = 0.02
    eps: float = 1e-12
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "einsum"

    @nn.compact
    def __call__(self, x_BxLxH, bias_Bx1x1xL, deterministic: bool):
        attended = SelfAttention(self.hidden_size, self.num_heads, self.init_std, self.attention_dropout_rate,
                                 self.dtype, self.param_dtype, self.attention, name="attention")(
            x_BxLxH, bias_Bx1x1xL, deterministic)
        attended = Dropout(self.dropout_rate)(attended, deterministic=deterministic)
        x_BxLxH = LayerNorm(self.eps, self.dtype, self.param_dtype, name="attention_LayerNorm")(x_BxLxH + attended)
        h_BxLxF = dense(self.intermediate_size, ("embed", "mlp"), self.init_std, self.dtype, self.param_dtype,
                        "intermediate")(x_BxLxH)
        h_BxLxF = ACTIVATIONS[self.activation](h_BxLxF)
        h_BxLxH = dense(self.hidden_size, ("mlp", "embed"), self.init_std, self.dtype, self.param_dtype,
                        "output")(h_BxLxF)
        h_BxLxH = Dropout(self.dropout_rate)(h_BxLxH, deterministic=deterministic)
        return LayerNorm(self.eps, self.dtype, self.param_dtype, name="output_LayerNorm")(x_BxLxH + h_BxLxH)


def attention_bias(attention_mask_BxL, dtype=jnp.float32):
    """Additive mask: 0 where attended, a large negative number at padding."""
    return jnp.where(attention_mask_BxL[:, None, None, :] > 0, 0.0, jnp.finfo(dtype).min).astype(dtype)


class Encoder(nn.Module):
    """`num_layers` TransformerBlocks, each with its own parameters (`layer_0`, `layer_1`, ...)."""
    num_layers: int
    hidden_size: int
    num_heads: int
    intermediate_size: int
    activation: str = "gelu"
    init_std: float = 0.02
    eps: float = 1e-12
    dropout_rate: float = 0.1
    attention_dropout_rate: float = 0.1
    remat: str = "none"
    dtype: Dtype = jnp.float32
    param_dtype: Dtype = jnp.float32
    attention: str = "einsum"

    @nn.compact
    def __call__(self, x_BxLxH, attention_mask_BxL, deterministic: bool):
        bias_Bx1x1xL = attention_bias(attention_mask_BxL)
        block = rematerialised(TransformerBlock, self.remat)
        # HF's `hidden_states`: the encoder's input, then every layer's output (kept only when asked for).
        self.sow("intermediates", "hidden_states", x_BxLxH)
        for i in range(self.num_layers):
            x_BxLxH = block(self.hidden_size, self.num_heads, self.intermediate_size, self.activation,
                            self.init_std, self.eps, self.dropout_rate, self.attention_dropout_rate,
                            self.dtype, self.param_dtype, self.attention, name=f"layer_{i}")(
                x_BxLxH, bias_Bx1x1xL, deterministic)
            self.sow("intermediates", "hidden_states", x_BxLxH)
        return x_BxLxH


# What the backward pass recomputes: "full" keeps only each layer's input; "dots" also keeps the matmul
# outputs (without batch dimensions) and recomputes the cheap elementwise work.
REMAT_POLICIES = {"full": None, "dots": jax.checkpoint_policies.dots_with_no_batch_dims_saveable}


def rematerialised(block, policy: str):
    """`block` as is ("none"), or wrapped in `nn.remat` with the named policy."""
    if policy == "none":
        return block
    return nn.remat(block, static_argnums=(3,), policy=REMAT_POLICIES[policy])
