import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.config import ScheduleConfig, load_config
from electra_jax.models.electra import Electra
from electra_jax.optim import decay_mask, make_optimizer, make_schedule

PEAK = 1e-3


def _at(kind, steps, **kw):
    schedule = make_schedule(ScheduleConfig(kind=kind, **kw), PEAK, 1000)
    return [float(schedule(s)) for s in steps]


def test_linear_warmup_then_decay():
    v = _at("linear", [0, 50, 100, 550, 999, 1000], warmup_steps=100)
    np.testing.assert_allclose(v, [0, PEAK / 2, PEAK, PEAK / 2, PEAK / 900, 0], rtol=1e-4, atol=1e-12)  # float32


def test_polynomial_decay():
    v = _at("polynomial", [100, 550, 1000], warmup_steps=100, power=2.0, end_learning_rate=1e-5)
    np.testing.assert_allclose(v, [PEAK, (PEAK - 1e-5) * 0.25 + 1e-5, 1e-5], rtol=1e-5)


def test_electra_form_multiplies_warmup_into_decay():
    v = _at("electra", [50, 100, 500, 1000], warmup_steps=100)
    np.testing.assert_allclose(v, [PEAK * 0.95 * 0.5, PEAK * 0.9, PEAK * 0.5, 0.0], rtol=1e-5, atol=1e-12)


def test_warm_restart():
    v = _at("linear", [99, 100, 499, 500, 550, 600, 999], warmup_steps=100, restarts=(500,))
    # end of first warmup, peak; just before the restart, near zero; restart: warmup again from 0.
    np.testing.assert_allclose(v, [PEAK * 0.99, PEAK, PEAK / 400, 0.0, PEAK / 2, PEAK, PEAK / 400],
                               rtol=1e-4, atol=1e-12)


def test_decay_mask_excludes_layernorm_and_biases():
    config = load_config(None, ["model.vocab_size=50", "model.num_layers=1", "model.hidden_size=32",
                                "model.num_heads=2", "model.embedding_size=16", "model.intermediate_size=64"])
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.jit(Electra(config.model).init)(jax.random.key(0), ids, ids, ids + 1, ids[:, :2])["params"]
    flat = jax.tree_util.tree_flatten_with_path(decay_mask(params))[0]
    names = {"/".join(str(getattr(k, "key", "")) for k in path).strip("/"): v for path, v in flat}
    assert names["embeddings/LayerNorm/scale"] is False and names["embeddings/LayerNorm/bias"] is False
    assert names["discriminator/encoder/layer_0/attention/query/bias"] is False
    assert names["discriminator/encoder/layer_0/output_LayerNorm/scale"] is False
    assert names["generator_lm_head_bias"] is False
    assert names["embeddings/word_embeddings/embedding"] is True
    assert names["discriminator/encoder/layer_0/attention/query/kernel"] is True
    assert names["generator_predictions_dense/kernel"] is True
    # And the optimizer really leaves a LayerNorm scale undecayed when its gradient is zero.
    tx = make_optimizer(config.optimizer, lambda _: 1.0)
    params = jax.tree.map(lambda x: jnp.ones_like(x), __import__("flax").linen.unbox(params))
    updates, _ = jax.jit(tx.update)(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    assert float(jnp.abs(updates["embeddings"]["LayerNorm"]["scale"]).max()) == 0.0
    assert float(updates["embeddings"]["word_embeddings"]["embedding"].max()) == pytest.approx(-0.01)


def test_lamb_scales_each_update_by_the_layer_trust_ratio():
    import dataclasses
    config = load_config(None, ["optimizer.kind=lamb"])
    params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": jnp.ones(3)}, "LayerNorm": {"scale": jnp.ones(3)}}
    tx = make_optimizer(dataclasses.replace(config.optimizer, clip_norm=0.0), lambda _: 1.0)
    updates, _ = tx.update(jax.tree.map(jnp.zeros_like, params), tx.init(params), params)
    # Zero gradients: only weight decay moves the kernel, u = 0.01 * w, and the trust ratio |w| / |u| = 100
    # makes the step lr * 100 * 0.01 = 1 (AdamW would step 0.01). Bias and LayerNorm are not decayed.
    np.testing.assert_allclose(updates["dense"]["kernel"], -1.0, rtol=1e-6)
    assert float(jnp.abs(updates["dense"]["bias"]).max()) == 0.0
    assert float(jnp.abs(updates["LayerNorm"]["scale"]).max()) == 0.0
