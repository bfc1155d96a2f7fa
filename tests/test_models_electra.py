"""Our Flax ELECTRA agrees with the Hugging Face PyTorch classes given the same weights."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.config import load_config
from electra_jax.models.electra import Electra

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def _tower_state_dict(params, tower: str, layers: int, prefix: str = "electra."):
    """Flax tower params -> HF ElectraModel state-dict entries (kernels transposed to (out, in))."""
    out = {}
    emb = params["embeddings"]
    out[prefix + "embeddings.word_embeddings.weight"] = emb["word_embeddings"]["embedding"]
    out[prefix + "embeddings.position_embeddings.weight"] = emb["position_embeddings"]["embedding"]
    out[prefix + "embeddings.token_type_embeddings.weight"] = emb["token_type_embeddings"]["embedding"]
    out[prefix + "embeddings.LayerNorm.weight"] = emb["LayerNorm"]["scale"]
    out[prefix + "embeddings.LayerNorm.bias"] = emb["LayerNorm"]["bias"]
    t = params[tower]
    if "embeddings_project" in t:
        out[prefix + "embeddings_project.weight"] = t["embeddings_project"]["kernel"].T
        out[prefix + "embeddings_project.bias"] = t["embeddings_project"]["bias"]
    for i in range(layers):
        layer, hf = t["encoder"][f"layer_{i}"], f"{prefix}encoder.layer.{i}."
        for ours, theirs in (("query", "self.query"), ("key", "self.key"), ("value", "self.value"),
                             ("output", "output.dense")):
            out[hf + f"attention.{theirs}.weight"] = layer["attention"][ours]["kernel"].T
            out[hf + f"attention.{theirs}.bias"] = layer["attention"][ours]["bias"]
        for ours, theirs in (("attention_LayerNorm", "attention.output.LayerNorm"),
                             ("output_LayerNorm", "output.LayerNorm")):
            out[hf + theirs + ".weight"] = layer[ours]["scale"]
            out[hf + theirs + ".bias"] = layer[ours]["bias"]
        for ours, theirs in (("intermediate", "intermediate.dense"), ("output", "output.dense")):
            out[hf + theirs + ".weight"] = layer[ours]["kernel"].T
            out[hf + theirs + ".bias"] = layer[ours]["bias"]
    return out


def _load(model, state):
    tensors = {k: torch.from_numpy(np.ascontiguousarray(np.asarray(v))) for k, v in state.items()}
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    assert not unexpected, unexpected
    assert all("position_ids" in k for k in missing), missing
    model.eval()


@pytest.fixture(scope="module")
def setup():
    config = load_config(None, ["model.vocab_size=120", "model.embedding_size=24", "model.hidden_size=64",
                                "model.num_layers=2", "model.num_heads=4", "model.intermediate_size=96",
                                "model.generator_fraction=0.5", "model.max_position_embeddings=40",
                                "data.seq_len=16", "objective.max_predictions=4"])
    m = config.model
    ids = np.random.default_rng(0).integers(5, 120, size=(3, 16)).astype(np.int32)
    ids[2, 11:] = 0
    segments = np.zeros_like(ids)
    segments[:, 8:] = 1
    mask = (ids != 0).astype(np.int32)
    model = Electra(m)
    params = jax.tree.map(np.asarray, __import__("flax").linen.unbox(
        model.init(jax.random.key(1), jnp.asarray(ids), segments, mask, jnp.zeros((3, 4), jnp.int32))["params"]))
    # Non-trivial LayerNorm and bias values so a wrong mapping cannot hide.
    params = jax.tree.map(lambda x: x + np.random.default_rng(x.size).normal(0, 0.05, x.shape).astype(x.dtype), params)
    common = dict(vocab_size=m.vocab_size, embedding_size=m.embedding_size, max_position_embeddings=40,
                  type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12, hidden_dropout_prob=0.0,
                  attention_probs_dropout_prob=0.0, num_hidden_layers=m.num_layers)
    return config, model, params, ids, segments, mask, common


def test_discriminator_matches_hf(setup):
    config, model, params, ids, segments, mask, common = setup
    m = config.model
    hf = transformers.ElectraForPreTraining(transformers.ElectraConfig(
        hidden_size=m.hidden_size, num_attention_heads=m.num_heads, intermediate_size=m.intermediate_size, **common))
    state = _tower_state_dict(params, "discriminator", m.num_layers)
    state["discriminator_predictions.dense.weight"] = params["discriminator_predictions_dense"]["kernel"].T
    state["discriminator_predictions.dense.bias"] = params["discriminator_predictions_dense"]["bias"]
    state["discriminator_predictions.dense_prediction.weight"] = params["discriminator_predictions_prediction"]["kernel"].T
    state["discriminator_predictions.dense_prediction.bias"] = params["discriminator_predictions_prediction"]["bias"]
    _load(hf, state)
    ours = np.asarray(model.apply({"params": params}, ids, segments, mask, method=Electra.discriminator_logits))
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(ids).long(), token_type_ids=torch.from_numpy(segments).long(),
                    attention_mask=torch.from_numpy(mask).long()).logits.numpy()
    np.testing.assert_allclose(ours[mask > 0], theirs[mask > 0], atol=1e-4, rtol=1e-4)


def test_generator_matches_hf(setup):
    config, model, params, ids, segments, mask, common = setup
    m = config.model
    hf = transformers.ElectraForMaskedLM(transformers.ElectraConfig(
        hidden_size=m.generator_hidden_size, num_attention_heads=m.generator_num_heads,
        intermediate_size=m.generator_intermediate_size, **common))
    state = _tower_state_dict(params, "generator", m.num_layers)
    state["generator_predictions.dense.weight"] = params["generator_predictions_dense"]["kernel"].T
    state["generator_predictions.dense.bias"] = params["generator_predictions_dense"]["bias"]
    state["generator_predictions.LayerNorm.weight"] = params["generator_predictions_LayerNorm"]["scale"]
    state["generator_predictions.LayerNorm.bias"] = params["generator_predictions_LayerNorm"]["bias"]
    state["generator_lm_head.weight"] = params["embeddings"]["word_embeddings"]["embedding"]
    state["generator_lm_head.bias"] = params["generator_lm_head_bias"]
    _load(hf, state)
    positions = np.tile(np.arange(16)[None], (3, 1)).astype(np.int32)
    ours = np.asarray(model.apply({"params": params}, ids, segments, mask, positions, method=Electra.generator_logits))
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(ids).long(), token_type_ids=torch.from_numpy(segments).long(),
                    attention_mask=torch.from_numpy(mask).long()).logits.numpy()
    np.testing.assert_allclose(ours[mask > 0], theirs[mask > 0], atol=1e-4, rtol=1e-4)
