"""Gradient accumulation normalises once over the whole batch: 4 micro-batches == one big batch."""
import dataclasses
from pathlib import Path

import jax
import numpy as np
import pytest

from electra_jax.config import load_config
from electra_jax.data.loader import PretrainingData
from electra_jax.mesh import make_mesh
from electra_jax.run_dir import prepare_data, special_ids
from electra_jax.train import setup_training
from tests.conftest import TINY


@pytest.mark.slow
def test_accumulated_step_equals_full_batch(tiny_corpus, tmp_path):
    # No dropout: with it, micro-batches would legitimately draw different masks.
    config = load_config(None, TINY + [f"data.corpus=[{tiny_corpus}]", "train.steps=10", "model.dropout_rate=0",
                                       "model.attention_dropout_rate=0"])
    config, (folder,), metadata = prepare_data(config, Path(tmp_path), log=lambda _: None)
    specials = special_ids(metadata)
    loader = PretrainingData(folder, config.train.batch_size, seed=0)
    batches = [next(loader) for _ in range(2)]
    results = []
    for accum in (1, 4):
        c = dataclasses.replace(config, train=dataclasses.replace(config.train, grad_accum_steps=accum))
        training = setup_training(c, make_mesh(c, jax.devices()[:1]), specials)
        state = training.init()
        for step in range(2):
            state, metrics = training.step_fn(state, batches[step])
        results.append((jax.device_get(metrics), jax.device_get(state.params)))
    (m1, p1), (m4, p4) = results
    for name in ("loss", "generator_loss", "discriminator_loss", "grad_norm", "replaced_f1"):
        np.testing.assert_allclose(m4[name], m1[name], rtol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(a, b, atol=2e-6)
