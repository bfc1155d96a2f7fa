"""The two forms of `models/ops.py` compute the same thing: every CPU kernel against autodiff of its plain
op, whole ELECTRA and ALBERT training gradients with `model.ops=cpu` against `xla`, and `auto` lowering the
CPU kernels only for a CPU (the train steps of electra_small and albert_base exported for TPU and CUDA)."""
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

from electra_jax.config import load_config
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.families import family_of
from electra_jax.mesh import make_mesh
from electra_jax.models import ops
from electra_jax.train import setup_training

REPO = Path(__file__).resolve().parent.parent
SPECIALS = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)


def _values_and_grads(fn, *args):
    value, vjp = jax.vjp(fn, *args)
    cotangent = jax.random.normal(jax.random.key(9), value.shape, value.dtype)
    return value, vjp(cotangent)


@pytest.mark.parametrize("case", ["gelu", "gelu_new", "bias", "tall", "wide"])
def test_every_cpu_kernel_matches_autodiff_of_the_plain_op(case):
    x = jax.random.normal(jax.random.key(0), (3, 5, 24)) * 3
    if case in ops.GELUS:
        cpu, xla = ops.GELUS[case]
        args = (x,)
    elif case == "bias":
        cpu, xla, args = ops.add_bias_cpu, ops.add_bias_xla, (x, jax.random.normal(jax.random.key(1), (24,)))
    else:  # tall kernels take the transposed weight-gradient path
        shape = (24, 8) if case == "tall" else (24, 96)
        kernel = jax.random.normal(jax.random.key(1), shape)
        cpu, args = ops.dense_contraction_cpu, (x, kernel)
        xla = lambda x, k: jax.lax.dot_general(x, k, (((2,), (0,)), ((), ())))  # noqa: E731
    ours, plain = _values_and_grads(cpu, *args), _values_and_grads(xla, *args)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def _tiny(preset: str, ops_choice: str):
    config = load_config(REPO / "configs" / preset, [
        "model.vocab_size=97", "model.num_layers=2", "model.hidden_size=32", "model.num_heads=4",
        "model.embedding_size=16", "model.intermediate_size=64", "model.max_position_embeddings=32",
        "data.seq_len=32", "train.batch_size=4", "mesh.data=1", f"model.ops={ops_choice}"])
    return config


def _batch(config, sop: bool):
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.model.vocab_size, (config.train.batch_size, config.data.seq_len)).astype(np.int32)
    ids[:, 0], ids[:, -1], ids[0, 20:] = 2, 3, 0
    batch = {"input_ids": ids, "segment_ids": np.zeros_like(ids)}
    if sop:
        batch["sop_label"] = (np.arange(len(ids)) % 2).astype(np.int32)
    return {k: jnp.asarray(v) for k, v in batch.items()}


@pytest.mark.parametrize("preset", ["electra_smoke.yaml", pytest.param("albert_smoke.yaml", marks=pytest.mark.slow)])
def test_training_gradients_agree_between_cpu_and_xla_ops(preset):
    grads = {}
    for choice in ("cpu", "xla"):
        config = _tiny(preset, choice)
        family = family_of(config.model)
        model = family.model(config.model)
        word_starts = np.arange(config.model.vocab_size) % 3 != 0
        objective = family.objective(config, model, SPECIALS, word_starts)
        batch = _batch(config, family.data_format == "albert")
        whole, counts = objective.prepare((jax.random.key(1), jax.random.key(2)), batch)
        ids = jnp.zeros((1, config.data.seq_len), jnp.int32)
        params = model.init(jax.random.key(0), ids, ids, jnp.ones_like(ids), ids[:, :3])["params"]
        params = jax.tree.map(lambda p: getattr(p, "value", p), params, is_leaf=lambda p: hasattr(p, "value"))
        loss = lambda p: objective.loss(p, whole, jax.random.split(jax.random.key(3)), counts)[0]  # noqa: E731
        grads[choice] = jax.jit(jax.value_and_grad(loss))(params)
    (loss_cpu, grads_cpu), (loss_xla, grads_xla) = grads["cpu"], grads["xla"]
    np.testing.assert_allclose(loss_cpu, loss_xla, rtol=1e-5)
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(grads_cpu)[0], jax.tree.leaves(grads_xla)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5, err_msg=jax.tree_util.keystr(path))


# make test-fast lowers the smoke preset (the same kernels); the full-size presets run in the whole suite
@pytest.mark.parametrize("preset", ["electra_smoke.yaml", pytest.param("electra_small.yaml", marks=pytest.mark.slow),
                                    pytest.param("albert_base.yaml", marks=pytest.mark.slow)])
def test_auto_lowers_the_cpu_kernels_only_for_a_cpu(preset):
    # One micro-batch and no remat (whose optimisation barriers are no CPU kernel's), whatever the preset sets.
    config = load_config(REPO / "configs" / preset, ["model.vocab_size=30000", "train.batch_size=2", "mesh.data=1",
                                                     "model.ops=auto", "train.grad_accum_steps=1", "model.remat=none"])
    family = family_of(config.model)
    word_starts = np.ones(config.model.vocab_size, bool) if family.needs_word_starts(config) else None
    training = setup_training(config, make_mesh(config, jax.devices()[:1]), SPECIALS, word_starts)
    batch = {name: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=training.batch_sharding)
             for name, array in _batch(config, family.data_format == "albert").items()}
    modules = {platform: export.export(training.step_fn, platforms=[platform])(training.abstract_state,
                                                                              batch).mlir_module()
               for platform in ("cpu", "tpu", "cuda")}
    assert ops.CPU_KERNEL in modules["cpu"] and "optimization_barrier" in modules["cpu"]
    for platform in ("tpu", "cuda"):
        assert ops.CPU_KERNEL not in modules[platform], platform
        assert "optimization_barrier" not in modules[platform], platform
