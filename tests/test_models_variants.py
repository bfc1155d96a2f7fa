"""The speed switches change how, not what: remat policies give the same gradients, and attention through
jax.nn.dot_product_attention gives the same logits and gradients as ours (dropout off)."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.config import ConfigError, load_config
from electra_jax.models.electra import Electra
from electra_jax.validation import validate

OVERRIDES = ["model.vocab_size=60", "model.num_layers=2", "model.hidden_size=32", "model.num_heads=4",
             "model.embedding_size=16", "model.intermediate_size=64", "model.max_position_embeddings=16",
             "model.dropout_rate=0", "model.attention_dropout_rate=0", "data.seq_len=16",
             "objective.max_predictions=3"]


def _logits_and_grads(**model):
    config = load_config(None, OVERRIDES)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, **model))
    validate(config)
    net = Electra(config.model)
    rng = np.random.default_rng(0)
    ids = jnp.asarray(rng.integers(5, 60, (3, 12)), jnp.int32)
    mask = jnp.ones_like(ids).at[2, 9:].set(0)
    params = net.init(jax.random.key(0), ids, ids * 0, mask, ids[:, :2])["params"]

    def loss(p):
        logits = net.apply({"params": p}, ids, ids * 0, mask, method=Electra.discriminator_logits)
        return (logits * mask).sum(), logits
    (_, logits), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return np.asarray(logits), jax.tree.map(np.asarray, grads)


@pytest.mark.slow
def test_remat_policies_and_attention_implementations_agree():
    logits, grads = _logits_and_grads()
    for variant in ({"remat": "full"}, {"remat": "dots"}, {"remat": "attention_projections"}, {"attention": "jax"},
                    {"attention": "jax", "remat": "dots"}):
        other_logits, other_grads = _logits_and_grads(**variant)
        np.testing.assert_allclose(other_logits, logits, atol=1e-5, rtol=1e-5, err_msg=str(variant))
        for a, b in zip(jax.tree.leaves(other_grads), jax.tree.leaves(grads)):
            np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-4, err_msg=str(variant))


def test_fused_attention_refuses_attention_dropout():
    with pytest.raises(ConfigError, match="has no attention dropout; set model.attention_dropout_rate=0"):
        load_config(None, ["model.attention=jax"])
    with pytest.raises(ConfigError, match="model.remat must be none, dots, attention_projections, full"):
        load_config(None, ["model.remat=everything"])
