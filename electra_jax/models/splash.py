"""Pallas splash attention (model.attention=splash): the fused, blocked attention kernel of TPU v4 and later.

The kernel runs per example (vmapped) on (heads, length, head_dim) blocks of 128 positions, so data.seq_len
must be a multiple of 128. It takes no additive bias: padding becomes a segment of its own (segment 1 for
real tokens, 0 for padding), so a real query attends exactly the real keys, as our bias makes it. A Pallas
call is opaque to XLA's SPMD partitioner, which would gather the whole batch onto every device for it; under
a mesh (`mesh.activation_sharding`) the kernel therefore runs inside `jax.shard_map` on each device's rows.
v2 and v3 TPUs cannot compile it (validation refuses them).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from electra_jax.mesh import active_mesh

BLOCK = 128  # the kernel's default query and key block: data.seq_len must be a multiple


def splash_attention(q_BxNxLxD, k_BxNxLxD, v_BxNxLxD, bias_Bx1x1xL, interpret: bool = False):
    """softmax(q k^T / sqrt(D) + padding mask) v, B x N x L x D, through the splash kernel (`interpret`: run
    it through Pallas' interpreter, as a CPU can)."""
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_kernel as kernel_lib
    from jax.experimental.pallas.ops.tpu.splash_attention import splash_attention_mask as mask_lib

    _, heads, length, head_dim = q_BxNxLxD.shape
    segments_BxL = (bias_Bx1x1xL[:, 0, 0, :] == 0).astype(jnp.int32)  # 1: a real token, 0: padding

    def attend(q, k, v, segments):
        mask = mask_lib.MultiHeadMask([mask_lib.FullMask((length, length)) for _ in range(heads)])
        kernel = kernel_lib.make_splash_mha(mask, head_shards=1, q_seq_shards=1, interpret=interpret)
        scaled = q * jnp.asarray(head_dim ** -0.5, q.dtype)  # the kernel does not scale
        ids = kernel_lib.SegmentIds(q=segments, kv=segments)
        return jax.vmap(lambda q, k, v, s: kernel(q, k, v, segment_ids=s))(scaled, k, v, ids)

    active = active_mesh()
    if active is None:
        return attend(q_BxNxLxD, k_BxNxLxD, v_BxNxLxD, segments_BxL)
    mesh, rows = active
    spec = PartitionSpec(rows)
    return jax.shard_map(attend, mesh=mesh, in_specs=(spec, spec, spec, spec), out_specs=spec,
                         check_vma=False)(q_BxNxLxD, k_BxNxLxD, v_BxNxLxD, segments_BxL)
