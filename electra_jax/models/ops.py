"""The ops with two implementations, chosen by `model.ops`.

xla  plain JAX: `lax.dot_general` (nn.Dense's own), `jax.nn.gelu`, `x + b`; what TPUs and GPUs run.
cpu  the same values with hand-written gradients that XLA's CPU backend runs faster: a 2-D matmul whose
     tall-and-narrow weight gradient is taken as the transpose of the wide product (XLA's CPU dot is slow
     in that orientation), GELU derivatives made in the forward pass while erf or tanh is at hand (one
     multiply in the backward pass), and a bias gradient as a vector-matrix product (XLA's CPU reduce over
     the rows of a generator-logit gradient is far slower than a matmul). The measured effect of each is
     in docs/measurements.md.
auto `cpu` where the step is lowered for a CPU, `xla` elsewhere: `lax.platform_dependent` lowers only the
     branch of the platform being compiled for, so a TPU or GPU program holds no CPU kernel.
Each `cpu` op is tested against autodiff of its `xla` op (tests/test_ops.py).
"""
from __future__ import annotations

import functools
from typing import Callable

import jax
import jax.numpy as jnp

CPU_KERNEL = "electra_jax_cpu_kernel"  # the name scope of every CPU kernel's ops (seen in a lowered module)


def _cpu_kernel(fn: Callable) -> Callable:
    """`fn` with its ops under the CPU_KERNEL name scope, so a lowered module shows whether it holds one."""
    @functools.wraps(fn)
    def scoped(*args):
        with jax.named_scope(CPU_KERNEL):
            return fn(*args)
    return scoped


def by_platform(cpu: Callable, xla: Callable, ops: str) -> Callable:
    """`cpu` or `xla` as `ops` says; for "auto", whichever belongs to the platform the caller is lowered for."""
    if ops == "cpu":
        return cpu
    if ops == "xla":
        return xla
    return lambda *args: jax.lax.platform_dependent(*args, cpu=cpu, default=xla)


# ---------------------------------------------------------------------------- GELU

_SQRT_HALF = 0.7071067811865476
_INV_SQRT_2PI = 0.3989422804014327
_TANH_SCALE = 0.7978845608028654  # sqrt(2 / pi)


@_cpu_kernel
def _times_derivative(derivative, grad):
    return (grad * derivative,)


@jax.custom_vjp
@_cpu_kernel
def gelu_exact_cpu(x):
    """x * Phi(x) through erf (XLA's CPU erf is cheaper than the erfc that jax.nn.gelu uses)."""
    return x * (0.5 + 0.5 * jax.lax.erf(x * _SQRT_HALF))


@_cpu_kernel
def _gelu_exact_fwd(x):
    cdf = 0.5 + 0.5 * jax.lax.erf(x * _SQRT_HALF)
    return x * cdf, cdf + x * jnp.exp(-0.5 * x * x) * _INV_SQRT_2PI


gelu_exact_cpu.defvjp(_gelu_exact_fwd, _times_derivative)


@jax.custom_vjp
@_cpu_kernel
def gelu_tanh_cpu(x):
    """The tanh approximation (HF "gelu_new"), its derivative made in the forward pass."""
    return _gelu_tanh_fwd(x)[0]


@_cpu_kernel
def _gelu_tanh_fwd(x):
    tanh = jnp.tanh(_TANH_SCALE * (x + 0.044715 * x * x * x))
    derivative = 0.5 * (1 + tanh) + 0.5 * x * (1 - tanh * tanh) * _TANH_SCALE * (1 + 3 * 0.044715 * x * x)
    return 0.5 * x * (1 + tanh), derivative


gelu_tanh_cpu.defvjp(_gelu_tanh_fwd, _times_derivative)

# HF hidden_act -> (cpu, xla): "gelu" (ELECTRA, BERT) is the exact erf form, "gelu_new" (ALBERT) the tanh one.
GELUS = {"gelu": (gelu_exact_cpu, functools.partial(jax.nn.gelu, approximate=False)),
         "gelu_new": (gelu_tanh_cpu, functools.partial(jax.nn.gelu, approximate=True))}


def activation(name: str, ops: str) -> Callable:
    return by_platform(*GELUS[name], ops)


# ---------------------------------------------------------------------------- bias

@jax.custom_vjp
@_cpu_kernel
def add_bias_cpu(x, bias):
    """x + bias over the last axis, its bias gradient a vector-matrix product."""
    return x + bias.astype(x.dtype)


@_cpu_kernel
def _add_bias_fwd(x, bias):
    return add_bias_cpu(x, bias), bias


@_cpu_kernel
def _add_bias_bwd(bias, grad):
    rows = grad.reshape(-1, grad.shape[-1])
    bias_grad = jnp.dot(jnp.ones(rows.shape[0], rows.dtype), rows, preferred_element_type=jnp.float32)
    return grad, bias_grad.astype(bias.dtype)


add_bias_cpu.defvjp(_add_bias_fwd, _add_bias_bwd)


def add_bias_xla(x, bias):
    return x + bias.astype(x.dtype)


def add_bias(ops: str) -> Callable:
    return by_platform(add_bias_cpu, add_bias_xla, ops)


# ---------------------------------------------------------------------------- matmul

@jax.custom_vjp
@_cpu_kernel
def matmul_cpu(x_MxK, w_KxN):
    return x_MxK @ w_KxN


@_cpu_kernel
def _matmul_fwd(x_MxK, w_KxN):
    return x_MxK @ w_KxN, (x_MxK, w_KxN)


@_cpu_kernel
def _matmul_bwd(residuals, grad_MxN):
    x_MxK, w_KxN = residuals
    w_rows, w_cols = w_KxN.shape
    if w_rows > w_cols:  # the barrier keeps XLA from folding the transpose back into the dot
        grad_w = jax.lax.optimization_barrier(grad_MxN.T @ x_MxK).T
    else:
        grad_w = x_MxK.T @ grad_MxN
    return grad_MxN @ w_KxN.T, grad_w


matmul_cpu.defvjp(_matmul_fwd, _matmul_bwd)


def dense_contraction_cpu(x, kernel):
    """nn.Dense's contraction (the last axis of x with the kernel's first) as a 2-D `matmul_cpu`."""
    return matmul_cpu(x.reshape(-1, x.shape[-1]), kernel).reshape(*x.shape[:-1], kernel.shape[-1])


def dense_dot_general(ops: str) -> Callable | None:
    """The `dot_general` argument of nn.Dense: None (its own `lax.dot_general`) for xla."""
    if ops == "xla":
        return None

    def dot_general(x, kernel, dimension_numbers, precision=None, preferred_element_type=None):
        def xla(x, kernel):
            return jax.lax.dot_general(x, kernel, dimension_numbers, precision=precision,
                                       preferred_element_type=preferred_element_type)
        return by_platform(dense_contraction_cpu, xla, ops)(x, kernel)  # nn.Dense asks for one contraction
    return dot_general
