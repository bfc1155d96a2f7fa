import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.config import ModelConfig
from electra_jax.models.layers import Dropout, dense


def test_dropout_rate_and_scaling():
    x = jnp.ones((1001, 999))
    layer = Dropout(0.1)
    y = np.asarray(layer.apply({}, x, False, rngs={"dropout": jax.random.key(0)}))
    dropped = (y == 0).mean()
    assert abs(dropped - 0.1) < 0.002
    np.testing.assert_allclose(y[y != 0], 1 / 0.9, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.003  # inverted dropout keeps the expectation
    other = np.asarray(layer.apply({}, x, False, rngs={"dropout": jax.random.key(1)}))
    assert ((y == 0) != (other == 0)).mean() > 0.1  # a different key gives a different mask
    # Neighbouring elements (consecutive hash counters) drop independently.
    flat = y.ravel() == 0
    assert abs((flat[:-1] & flat[1:]).mean() - 0.01) < 0.001
    assert (np.asarray(layer.apply({}, x, True)) == 1).all()


@pytest.mark.parametrize("ops", ["cpu", "xla", "auto"])
@pytest.mark.parametrize("shape", [(24, 8), (8, 24)])  # tall kernels take the transposed-gradient path
def test_dense_gradients_match_plain_matmul(shape, ops):
    x = jax.random.normal(jax.random.key(0), (3, 5, shape[0]))
    layer = dense(ModelConfig(initializer_range=0.5, ops=ops), shape[1], ("embed", "mlp"), "d")
    params = nn.unbox(layer.init(jax.random.key(1), x))
    cotangent = jax.random.normal(jax.random.key(2), (3, 5, shape[1]))
    ours = jax.grad(lambda p, x: (layer.apply(p, x) * cotangent).sum(), argnums=(0, 1))(params, x)
    plain = jax.grad(lambda p, x: ((x @ p["params"]["kernel"] + p["params"]["bias"]) * cotangent).sum(),
                     argnums=(0, 1))(params, x)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(plain)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
