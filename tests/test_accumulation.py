"""Gradient accumulation normalises once over the whole batch: 4 micro-batches == one big batch."""
import dataclasses
from pathlib import Path

import jax
import numpy as np

from electra_jax.config import load_config
from electra_jax.data.pretraining import BatchLoader
from electra_jax.mesh import make_mesh
from electra_jax.train import prepare_data, setup_training, with_vocab
from tests.conftest import TINY


def test_accumulated_step_equals_full_batch(tiny_corpus, tmp_path):
    # No dropout: with it, micro-batches would legitimately draw different masks.
    config = load_config(None, TINY + [f"data.corpus=[{tiny_corpus}]", "train.steps=10", "model.dropout_rate=0",
                                       "model.attention_dropout_rate=0"])
    tokenizer, examples, specials = prepare_data(config, Path(tmp_path), log=lambda _: None)
    config = with_vocab(config, tokenizer.get_vocab_size())
    loader = BatchLoader(examples, config.train.batch_size, seed=0)
    results = []
    for accum in (1, 4):
        c = dataclasses.replace(config, train=dataclasses.replace(config.train, grad_accum_steps=accum))
        training = setup_training(c, make_mesh(c, jax.devices()[:1]), specials)
        state = training.init()
        for step in range(2):
            state, metrics = training.step_fn(state, loader.local_batch(step))
        results.append((jax.device_get(metrics), jax.device_get(state.params)))
    (m1, p1), (m4, p4) = results
    for name in ("loss", "generator_loss", "discriminator_loss", "grad_norm", "replaced_f1"):
        np.testing.assert_allclose(m4[name], m1[name], rtol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(a, b, atol=2e-6)
