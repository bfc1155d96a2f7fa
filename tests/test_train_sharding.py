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


def _compiled(config):
    from electra_jax.bench import synthetic_batch
    from electra_jax.data.text_tokenizer import SpecialIds
    training = setup_training(config, make_mesh(config), SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4))
    batch = {name: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=training.batch_sharding)
             for name, array in synthetic_batch(config, config.model.vocab_size).items()}
    return training, training.step_fn.lower(training.abstract_state, batch).compile()


@pytest.mark.slow
def test_fsdp_shards_the_state_and_keeps_activations_split_by_rows():
    """electra_small (4 of its 12 layers, for compile time) on 8 devices, mesh.fsdp=8 against mesh.data=8: an
    eighth of the parameters and optimizer state per device, temporaries within 1.5x of data parallelism,
    weights all-gathered and no all-to-all (activations stay split by rows; a weight's fsdp split does not
    leak into them)."""
    from tests.conftest import REPO
    import dataclasses
    base = load_config(REPO / "configs/electra_small.yaml", ["model.vocab_size=30522", "model.num_layers=4",
                                                              "model.dtype=float32"])
    results = {}
    for name, mesh in (("data", dict(data=8, fsdp=1)), ("fsdp", dict(data=1, fsdp=8))):
        config = dataclasses.replace(base, mesh=dataclasses.replace(base.mesh, **mesh))
        training, compiled = _compiled(config)
        hlo, memory = compiled.as_text(), compiled.memory_analysis()
        state_bytes = sum(np.prod(leaf.sharding.shard_shape(leaf.shape))
                          * leaf.dtype.itemsize for leaf in jax.tree.leaves(training.abstract_state))
        results[name] = dict(state=state_bytes, temp=memory.temp_size_in_bytes,
                             all_gather=hlo.count("all-gather("), all_to_all=hlo.count("all-to-all("))
    data, fsdp = results["data"], results["fsdp"]
    print(results)
    assert fsdp["state"] < 0.13 * data["state"]
    assert fsdp["temp"] < 1.5 * data["temp"]
    assert fsdp["all_to_all"] == 0 and fsdp["all_gather"] > 0 and data["all_gather"] == 0
