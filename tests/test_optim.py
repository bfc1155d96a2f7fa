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


def test_bert_form_warms_up_then_decays_from_step_zero():
    # google-research/bert and albert: lr * step / warmup, then lr * (1 - step / total) ** power from step 0,
    # so just past the warmup it is below the peak (0.9 * PEAK at step 100 of 1000).
    v = _at("bert", [50, 99, 100, 500, 1000], warmup_steps=100)
    np.testing.assert_allclose(v, [PEAK * 0.5, PEAK * 0.99, PEAK * 0.9, PEAK * 0.5, 0.0], rtol=1e-5, atol=1e-12)
    v = _at("bert", [100, 500], warmup_steps=100, power=2.0)
    np.testing.assert_allclose(v, [PEAK * 0.81, PEAK * 0.25], rtol=1e-5)


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
    # Biases and LayerNorm are left out of the trust ratio too (albert's exclude_from_layer_adaptation): with
    # |b| = 2|g| a scaled bias step would be -2; Adam's own first step is -1.
    params = {"dense": {"kernel": jnp.ones((4, 3)), "bias": 2 * jnp.ones(3)}, "LayerNorm": {"scale": 2 * jnp.ones(3)}}
    grads = jax.tree.map(jnp.ones_like, params)
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["dense"]["bias"], -1.0, rtol=1e-5)
    np.testing.assert_allclose(updates["LayerNorm"]["scale"], -1.0, rtol=1e-5)


def tf1_update_numpy(params, grads, m, v, lr, lamb=False, b1=0.9, b2=0.999, eps=1e-6, weight_decay=0.01, clip=1.0):
    """google-research's TF1 optimizers after tf.clip_by_global_norm, in NumPy: AdamWeightDecayOptimizer
    (electra, bert) or with `lamb` albert's lamb_optimizer.py. No bias correction; decay, and LAMB's trust ratio
    |w| / |update|, on every weight but LayerNorm and biases."""
    norm = np.sqrt(sum(float(np.sum(g.astype(np.float64) ** 2)) for g in grads.values()))
    scale = clip / max(norm, clip)
    new = {}
    for name, p in params.items():
        g = grads[name] * scale
        next_m = b1 * m[name] + (1 - b1) * g
        next_v = b2 * v[name] + (1 - b2) * g * g
        update = next_m / (np.sqrt(next_v) + eps)
        ratio = 1.0
        if not any(word in name for word in ("LayerNorm", "layer_norm", "bias")):  # the TF code's exclusions
            update = update + weight_decay * p
            ratio = np.linalg.norm(p) / np.linalg.norm(update) if lamb else 1.0
        new[name] = p - ratio * lr * update
    return new


SHAPES = {"dense/kernel": (8, 4), "dense/bias": (4,), "LayerNorm/scale": (4,)}


def random_step_inputs(seed):
    """(params, grads, adam_m, adam_v) by "/"-joined name; these gradients' norm is above 1, so clipping takes part."""
    rng = np.random.default_rng(seed)
    draw = lambda f: {k: f(s).astype(np.float32) for k, s in SHAPES.items()}  # noqa: E731
    return (draw(lambda s: rng.normal(size=s)), draw(lambda s: rng.normal(size=s)),
            draw(lambda s: 0.1 * rng.normal(size=s)), draw(lambda s: 0.01 * rng.random(size=s)))


def one_step(optimizer_config, schedule, params, grads, m, v, step):
    """The parameters after one step of our optimizer from moments m, v at `step`, by "/"-joined name."""
    import optax
    from electra_jax.optim import with_adam_moments
    tree = lambda d: {"dense": {"kernel": d["dense/kernel"], "bias": d["dense/bias"]},  # noqa: E731
                      "LayerNorm": {"scale": d["LayerNorm/scale"]}}
    tx = make_optimizer(optimizer_config, schedule)
    state = with_adam_moments(tx.init(tree(params)), tree(m), tree(v), step)
    updates, _ = tx.update(tree(grads), state, tree(params))
    new = optax.apply_updates(tree(params), updates)
    return {name: np.asarray(new[name.split("/")[0]][name.split("/")[1]]) for name in SHAPES}


def test_without_bias_correction_a_step_is_the_tf1_adam_weight_decay_update():
    params, grads, m, v = random_step_inputs(0)
    schedule = lambda step: 1e-3 * (1.0 - step / 10_000)  # noqa: E731
    ours = one_step(load_config(None, ["optimizer.bias_correction=false"]).optimizer, schedule,
                    params, grads, m, v, step=2000)
    reference = tf1_update_numpy(params, grads, m, v, lr=schedule(2000))
    for name in SHAPES:
        np.testing.assert_allclose(ours[name], reference[name], rtol=0, atol=1e-6, err_msg=name)
    # With bias correction (the default) the same step differs by far more than that tolerance.
    corrected = one_step(load_config(None).optimizer, schedule, params, grads, m, v, step=2000)
    assert np.abs(corrected["dense/kernel"] - reference["dense/kernel"]).max() > 1e-5


def test_lamb_without_bias_correction_is_albert_lamb_optimizer():
    params, grads, m, v = random_step_inputs(1)
    config = load_config(None, ["optimizer.kind=lamb", "optimizer.bias_correction=false"])
    ours = one_step(config.optimizer, lambda step: 1e-3, params, grads, m, v, step=500)
    reference = tf1_update_numpy(params, grads, m, v, lr=1e-3, lamb=True)
    for name in SHAPES:
        np.testing.assert_allclose(ours[name], reference[name], rtol=0, atol=1e-6, err_msg=name)
