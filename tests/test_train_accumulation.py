"""Gradient accumulation normalises once over the whole batch (4 micro-batches == one big batch), and each
micro-batch keeps the batch's split over the devices: a device's micro-step runs on its own rows / accum."""
import dataclasses
import re
from pathlib import Path

import jax
import numpy as np
import pytest

from electra_jax.bench import synthetic_batch
from electra_jax.config import load_config
from electra_jax.data.loader import PretrainingData
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.mesh import make_mesh
from electra_jax.run_dir import prepare_data, special_ids
from electra_jax.train import setup_training
from tests.conftest import REPO, TINY

SPECIALS = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)


@pytest.mark.slow
@pytest.mark.parametrize("devices", [1, 8])
def test_accumulated_step_equals_full_batch(tiny_corpus, tmp_path, devices):
    # No dropout: with it, micro-batches would legitimately draw different masks. A batch of 32 on 8 devices
    # with 4 micro-batches: one row per device per micro-step.
    config = load_config(None, TINY + [f"data.corpus=[{tiny_corpus}]", "train.steps=10", "model.dropout_rate=0",
                                       "model.attention_dropout_rate=0", "train.batch_size=32",
                                       f"mesh.data={devices}"])
    config, (folder,), metadata = prepare_data(config, Path(tmp_path), log=lambda _: None)
    specials = special_ids(metadata)
    loader = PretrainingData(folder, config.train.batch_size, seed=0)
    batches = [next(loader) for _ in range(2)]
    results = []
    for accum in (1, 4):
        c = dataclasses.replace(config, train=dataclasses.replace(config.train, grad_accum_steps=accum))
        training = setup_training(c, make_mesh(c, jax.devices()[:devices]), specials)
        state = training.init()
        for step in range(2):
            batch = {k: jax.device_put(v, training.batch_sharding) for k, v in batches[step].items()}
            state, metrics = training.step_fn(state, batch)
        results.append((jax.device_get(metrics), jax.device_get(state.params)))
    (m1, p1), (m4, p4) = results
    for name in ("loss", "generator_loss", "discriminator_loss", "grad_norm", "replaced_f1"):
        np.testing.assert_allclose(m4[name], m1[name], rtol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(a, b, atol=2e-6)


def compiled_step(config):
    """The train step compiled for this process's devices, as optimised HLO text."""
    training = setup_training(config, make_mesh(config), SPECIALS)
    batch = {name: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=training.batch_sharding)
             for name, array in synthetic_batch(config, config.model.vocab_size).items()}
    return training.step_fn.lower(training.abstract_state, batch).compile().as_text()


@pytest.mark.slow
def test_a_micro_step_runs_on_local_rows_over_accum_without_gathering_the_batch():
    """electra_small (batch 128 of 128 tokens, 4 heads) on 8 devices with 4 micro-batches: every attention
    tensor of the compiled step is (128 / 8 / 4 = 4) x 4 x 128 x 128 per device, and no collective gathers
    anything (the parameters are replicated; the gradients are all-reduced)."""
    assert jax.device_count() == 8
    config = load_config(REPO / "configs/electra_small.yaml", ["model.vocab_size=30522", "train.grad_accum_steps=4",
                                                                "model.dtype=float32"])
    hlo = compiled_step(config)
    attention_rows = set(re.findall(r"f32\[(\d+),4,128,128\]", hlo))
    assert attention_rows == {"4"}, attention_rows
    assert "all-gather" not in hlo and "all-to-all" not in hlo
