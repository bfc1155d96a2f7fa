"""ALBERT against HF PyTorch AlbertForPreTraining / AlbertForMaskedLM: the name table covers every tensor,
and MLM and SOP logits agree to 1e-4 with grouped, shared layers."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.config import load_config
from electra_jax.hf.names import ALBERT_TIED, albert_rows, convert, set_path
from electra_jax.models.albert import Albert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 120


def _configs(groups: int, inner: int, embedding: int = 16):
    config = load_config(None, ["model.architecture=albert", f"model.vocab_size={VOCAB}",
                                f"model.embedding_size={embedding}", "model.hidden_size=32", "model.num_layers=4",
                                "model.num_heads=4", "model.intermediate_size=64", f"model.num_hidden_groups={groups}",
                                f"model.inner_group_num={inner}", "model.max_position_embeddings=40",
                                "model.dropout_rate=0", "model.attention_dropout_rate=0", "data.seq_len=24",
                                "objective.max_predictions=5"])
    m = config.model
    hf = transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=m.embedding_size, hidden_size=m.hidden_size, num_hidden_layers=m.num_layers,
        num_hidden_groups=groups, inner_group_num=inner, num_attention_heads=m.num_heads,
        intermediate_size=m.intermediate_size, hidden_act="gelu_new", hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0, max_position_embeddings=40,
        layer_norm_eps=1e-12, type_vocab_size=2)
    return config, hf


def _our_params(config, state_dict, architecture):
    model = Albert(config.model)
    ids = jnp.zeros((1, 8), jnp.int32)
    params = jax.tree.map(np.array, model.init(jax.random.key(0), ids, ids, jnp.ones_like(ids),
                                               jnp.zeros((1, 2), jnp.int32))["params"])
    rows = albert_rows(config.model, architecture)
    for ours, hf, layout in rows:
        set_path(params, ours, convert(state_dict[hf], layout))
    return model, params, rows


def _inputs(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, size=(3, 24))
    ids[:, 0], ids[:, 11], ids[:, 23] = 2, 3, 3
    segments = np.zeros_like(ids)
    segments[:, 12:] = 1
    attention = np.ones_like(ids)
    attention[2, 18:] = 0  # padding in one row
    ids[2, 18:] = 0
    return ids, segments, attention


def _both_outputs(hf, model, params, seed):
    """(HF outputs, our MLM logits at every position and SOP logits, the mask of real tokens)."""
    ids, segments, attention = _inputs(seed)
    with torch.no_grad():
        out = hf(torch.from_numpy(ids), attention_mask=torch.from_numpy(attention),
                 token_type_ids=torch.from_numpy(segments))
    positions = np.tile(np.arange(ids.shape[1]), (ids.shape[0], 1))
    ours = model.apply({"params": params}, ids, segments, attention, positions)
    return out, tuple(np.asarray(x) for x in ours), attention.astype(bool)


@pytest.mark.parametrize("groups,inner,embedding", [pytest.param(1, 1, 16, marks=pytest.mark.slow), (2, 2, 16),
                                                    pytest.param(4, 1, 32, marks=pytest.mark.slow)])
def test_pretraining_logits_match_hf(groups, inner, embedding):
    config, hf_config = _configs(groups, inner, embedding)
    torch.manual_seed(groups * 10 + inner)
    hf = transformers.AlbertForPreTraining(hf_config).eval()
    state_dict = {name: tensor.detach().numpy() for name, tensor in hf.state_dict().items()}
    model, params, rows = _our_params(config, state_dict, "AlbertForPreTraining")
    # The table names every HF tensor once, apart from the decoder tied to the embeddings and the bias.
    assert {hf_name for _, hf_name, _ in rows} | set(ALBERT_TIED) == set(state_dict)
    assert len({ours for ours, _, _ in rows}) == len(jax.tree.leaves(params))
    out, (mlm, sop), real = _both_outputs(hf, model, params, seed=0)
    np.testing.assert_allclose(mlm[real], out.prediction_logits.numpy()[real], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(sop, out.sop_logits.numpy(), atol=1e-4, rtol=1e-4)


def test_masked_lm_logits_match_hf():
    config, hf_config = _configs(2, 1)
    torch.manual_seed(3)
    hf = transformers.AlbertForMaskedLM(hf_config).eval()
    state_dict = {name: tensor.detach().numpy() for name, tensor in hf.state_dict().items()}
    model, params, rows = _our_params(config, state_dict, "AlbertForMaskedLM")
    assert {hf_name for _, hf_name, _ in rows} | set(ALBERT_TIED) == set(state_dict)
    out, (mlm, _), real = _both_outputs(hf, model, params, seed=1)
    np.testing.assert_allclose(mlm[real], out.logits.numpy()[real], atol=1e-4, rtol=1e-4)
