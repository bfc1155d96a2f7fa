"""The same train step on 1 device and on 8 fake CPU devices in three mesh layouts."""
from pathlib import Path

import jax
import numpy as np
import pytest

from electra_jax.config import load_config
from electra_jax.data.loader import PretrainingData
from electra_jax.mesh import make_mesh
from electra_jax.run_dir import prepare_data, special_ids
from electra_jax.train import setup_training
from electra_jax.validation import validate
from tests.conftest import TINY

# Hidden 128 with generator fraction 1.0 gives the generator 2 heads, so a tensor axis of 2 divides them.
SHARDED = TINY + ["model.hidden_size=128", "model.generator_fraction=1.0", "train.steps=10"]


def _losses(config, devices, folder, specials, steps=3):
    validate(config, len(devices))
    mesh = make_mesh(config, devices)
    training = setup_training(config, mesh, specials)
    loader = PretrainingData(folder, config.train.batch_size, seed=0)
    state, losses = training.init(), []
    for step in range(steps):
        batch = {k: jax.device_put(v, training.batch_sharding) for k, v in next(loader).items()}
        state, metrics = training.step_fn(state, batch)
        losses.append(float(metrics["loss"]))
    return np.array(losses)


@pytest.fixture(scope="module")
def data(tiny_corpus, tmp_path_factory):
    config = load_config(None, SHARDED + [f"data.corpus=[{tiny_corpus}]"])
    config, (folder,), metadata = prepare_data(config, Path(tmp_path_factory.mktemp("run")), log=lambda _: None)
    return config, folder, special_ids(metadata)


@pytest.fixture(scope="module")
def single_device_losses(data):
    config, folder, specials = data
    return _losses(config, jax.devices()[:1], folder, specials)


# Each layout compiles the step twice (about 35 s on 2 cores), so they run in the whole suite only;
# make test-fast keeps test_parameters_are_really_sharded
@pytest.mark.slow
@pytest.mark.parametrize("shape", [(8, 1, 1), (4, 2, 1), (2, 2, 2)])
def test_sharded_matches_single_device(data, single_device_losses, shape):
    assert jax.device_count() == 8
    config, folder, specials = data
    import dataclasses
    config = dataclasses.replace(config, mesh=dataclasses.replace(config.mesh, data=shape[0], fsdp=shape[1],
                                                                  tensor=shape[2]))
    losses = _losses(config, jax.devices(), folder, specials)
    assert np.all(np.isfinite(losses)) and losses[0] != losses[-1]
    np.testing.assert_allclose(losses, single_device_losses, rtol=1e-5, atol=1e-5)


def test_parameters_are_really_sharded(data):
    config, folder, specials = data
    import dataclasses
    config = dataclasses.replace(config, mesh=dataclasses.replace(config.mesh, data=2, fsdp=2, tensor=2))
    training = setup_training(config, make_mesh(config), specials)
    kernel = training.init().params["discriminator"]["encoder"]["layer_0"]["intermediate"]["kernel"]
    assert tuple(kernel.sharding.spec) == ("fsdp", "tensor")
    assert kernel.addressable_shards[0].data.shape == (kernel.shape[0] // 2, kernel.shape[1] // 2)
