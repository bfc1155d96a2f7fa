import jax
import jax.numpy as jnp
import numpy as np

from electra_jax.models.layers import Dropout


def test_dropout_rate_and_scaling():
    x = jnp.ones((1001, 999))  # odd size: the last 16-bit half is cut off
    layer = Dropout(0.1)
    y = np.asarray(layer.apply({}, x, False, rngs={"dropout": jax.random.key(0)}))
    dropped = (y == 0).mean()
    assert abs(dropped - 0.1) < 0.002
    np.testing.assert_allclose(y[y != 0], 1 / 0.9, rtol=1e-6)
    assert abs(y.mean() - 1.0) < 0.003  # inverted dropout keeps the expectation
    other = np.asarray(layer.apply({}, x, False, rngs={"dropout": jax.random.key(1)}))
    assert ((y == 0) != (other == 0)).mean() > 0.1  # a different key gives a different mask
    # Element i and element i + ceil(n/2) share one random word (low and high half): still independent.
    pair = (y.size + 1) // 2
    first, second = (y.ravel()[: y.size - pair] == 0), (y.ravel()[pair:] == 0)
    assert abs((first & second).mean() - 0.01) < 0.001
    assert (np.asarray(layer.apply({}, x, True)) == 1).all()
