"""ELECTRA's embedding sharing (objective.embedding_sharing) and generator depth (model.generator_layers):
which loss trains which table, and the export to / import from Hugging Face of each layout."""
import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.config import ConfigError, load_config
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.families import family_of
from electra_jax.hf.electra import write_model_files
from electra_jax.models.electra import DELTA, GENERATOR_EMBEDDINGS, Electra, tower_params
from electra_jax.objectives.electra import ElectraObjective
from electra_jax.validation import validate
from tests.test_hf_electra import VOCAB, assert_logits_equal, batch, hf_logits, save_tokenizer, tiny_config
from tests.test_hf_electra import wordpiece_from_vocab

SPECIALS = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)


def config_with(sharing="full", generator_layers=0, embedding=24, hidden=48, fraction=1 / 3):
    config = tiny_config(embedding, hidden, fraction)
    config = dataclasses.replace(
        config, model=dataclasses.replace(config.model, generator_layers=generator_layers, dropout_rate=0.0,
                                          attention_dropout_rate=0.0),
        objective=dataclasses.replace(config.objective, embedding_sharing=sharing))
    validate(config)
    return config


def perturbed_params(config, seed=1):
    """Initialised parameters plus noise everywhere (so a zero delta or a wrong table cannot hide)."""
    ids, segments, mask = batch()
    model = family_of(config.model).build(config)
    params = nn.unbox(model.init(jax.random.key(seed), ids, segments, mask, jnp.zeros((3, 4), jnp.int32)))["params"]
    return jax.tree.map(lambda x: np.asarray(x) + np.random.default_rng(x.size).normal(0, 0.05, x.shape)
                        .astype(np.float32), params)


def loss_grads(config, params):
    """(gradient of the generator's MLM loss, gradient of the discriminator's RTD loss) on one batch."""
    model = family_of(config.model).build(config)
    objective = ElectraObjective(config, model, SPECIALS)
    ids, segments, _ = batch()
    whole, counts = objective.prepare((jax.random.key(3), jax.random.key(4)), {"input_ids": jnp.asarray(ids),
                                                                               "segment_ids": jnp.asarray(segments)})
    keys = (jax.random.key(5), jax.random.key(6))

    def part(name):
        return jax.grad(lambda p: getattr(objective._sums(p, whole, keys, deterministic=True), name))(params)
    return part("mlm_loss"), part("disc_loss")


def norm(tree) -> float:
    return float(sum(np.square(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(tree)) ** 0.5)


def test_gdes_shared_table_learns_from_mlm_only_and_the_delta_from_rtd_only():
    config = config_with("gdes")
    params = perturbed_params(config)
    assert set(params[DELTA]) == set(params["embeddings"])  # word, position, type tables and the LayerNorm
    mlm, rtd = loss_grads(config, params)
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings", "LayerNorm"):
        assert norm(mlm["embeddings"][name]) > 1e-3, name
        assert norm(rtd[DELTA][name]) > 1e-3, name
        assert norm(rtd["embeddings"][name]) == 0.0, name  # stop_gradient: not even rounding noise
        assert norm(mlm[DELTA][name]) == 0.0, name
    assert norm(rtd["discriminator"]) > 1e-3 and norm(mlm["discriminator"]) == 0.0
    assert norm(mlm["generator"]) > 1e-3 and norm(rtd["generator"]) == 0.0


def test_full_sharing_trains_one_table_with_both_losses_and_none_keeps_them_apart():
    full = config_with("full")
    mlm, rtd = loss_grads(full, perturbed_params(full))
    assert norm(mlm["embeddings"]) > 1e-3 and norm(rtd["embeddings"]) > 1e-3

    separate = config_with("none")
    params = perturbed_params(separate)
    mlm, rtd = loss_grads(separate, params)
    assert norm(mlm[GENERATOR_EMBEDDINGS]) > 1e-3 and norm(rtd[GENERATOR_EMBEDDINGS]) == 0.0
    assert norm(rtd["embeddings"]) > 1e-3 and norm(mlm["embeddings"]) == 0.0


def test_a_fresh_gdes_delta_is_zero_so_the_discriminator_starts_on_the_shared_tables():
    config = config_with("gdes")
    ids, segments, mask = batch()
    model = family_of(config.model).build(config)
    params = nn.unbox(model.init(jax.random.key(0), ids, segments, mask, jnp.zeros((3, 4), jnp.int32)))["params"]
    assert all(not np.asarray(x).any() for x in jax.tree.leaves(params[DELTA]))
    full = {name: value for name, value in params.items() if name != DELTA}
    ours = model.apply({"params": params}, ids, segments, mask, method=Electra.discriminator_logits)
    shared = Electra(config.model).apply({"params": full}, ids, segments, mask, method=Electra.discriminator_logits)
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(shared))


def model_logits(config, params):
    ids, segments, mask = batch()
    model = family_of(config.model).build(config)
    positions = jnp.tile(jnp.arange(ids.shape[1]), (ids.shape[0], 1))
    gen = model.apply({"params": params}, ids, segments, mask, positions, method=Electra.generator_logits)
    disc = model.apply({"params": params}, ids, segments, mask, method=Electra.discriminator_logits)
    return np.asarray(gen), np.asarray(disc)


def write_pair(folder, config, params):
    for tower in ("discriminator", "generator"):
        write_model_files(folder / tower, config, params, tower)
    vocab = {f"w{i}": i for i in range(VOCAB)}
    for i, token in enumerate(("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")):
        vocab = {**{k: v for k, v in vocab.items() if v != i}, token: i}
    save_tokenizer(wordpiece_from_vocab(vocab, lowercase=False, strip_accents=False), folder / "discriminator")


@pytest.mark.parametrize("sharing,generator_layers", [("gdes", 1), pytest.param("none", 0, marks=pytest.mark.slow),
                                                      pytest.param("full", 1, marks=pytest.mark.slow)])
def test_export_gives_hf_our_logits_and_import_gives_back_the_tables(tmp_path, sharing, generator_layers):
    import yaml

    from electra_jax.hf.importer import import_hf
    from electra_jax.run_dir import load_run_params
    pytest.importorskip("transformers")
    config = config_with(sharing, generator_layers)
    params = perturbed_params(config)
    write_pair(tmp_path / "hf", config, params)
    assert_logits_equal(model_logits(config, params), hf_logits(tmp_path / "hf"))

    import json
    layers = {tower: json.loads((tmp_path / "hf" / tower / "config.json").read_text())["num_hidden_layers"]
              for tower in ("discriminator", "generator")}
    assert layers == {"discriminator": 2, "generator": generator_layers or 2}

    base = tmp_path / "base.yaml"
    base.write_text(yaml.safe_dump({"objective": {"embedding_sharing": sharing}}))
    import_hf(tmp_path / "hf", tmp_path / "run", base_config=base, log=lambda *_: None)
    imported, again, _ = load_run_params(tmp_path / "run", None)
    assert imported.model.generator_layers == generator_layers
    assert imported.objective.embedding_sharing == sharing
    assert jax.tree.structure(again) == jax.tree.structure(params)
    for path, a in jax.tree_util.tree_leaves_with_path(params):  # delta = discriminator - generator: rounding only
        np.testing.assert_allclose(again_at(again, path), a, rtol=0, atol=1e-6, err_msg=jax.tree_util.keystr(path))
    assert_logits_equal(model_logits(imported, again), hf_logits(tmp_path / "hf"))


def again_at(tree, path):
    for key in path:
        tree = tree[key.key]
    return tree


def test_an_exported_gdes_discriminator_holds_the_shared_tables_plus_the_delta():
    config = config_with("gdes")
    params = perturbed_params(config)
    body = family_of(config.model).body_params(config, params)
    assert DELTA not in body
    np.testing.assert_array_equal(body["embeddings"]["word_embeddings"]["embedding"],
                                  params["embeddings"]["word_embeddings"]["embedding"]
                                  + params[DELTA]["word_embeddings"]["embedding"])
    assert tower_params(params, "gdes", "generator")["embeddings"] is params["embeddings"]


def test_a_pair_with_different_embeddings_under_full_sharing_names_the_fix(tmp_path):
    from electra_jax.hf.importer import HFImportError, import_hf
    config = config_with("gdes")
    write_pair(tmp_path / "hf", config, perturbed_params(config))
    with pytest.raises(HFImportError, match="embedding_sharing is gdes or none"):
        import_hf(tmp_path / "hf", tmp_path / "run", log=lambda *_: None)


def test_sharing_and_generator_depth_are_checked_in_one_line():
    with pytest.raises(ConfigError, match="objective.embedding_sharing must be full, gdes or none"):
        validate(load_config(None, ["objective.embedding_sharing=half"]))
    with pytest.raises(ConfigError, match="model.generator_layers must be >= 0"):
        validate(load_config(None, ["model.generator_layers=-1"]))
    with pytest.raises(ConfigError, match="is an ELECTRA option"):
        validate(load_config(None, ["model.architecture=albert", "objective.embedding_sharing=gdes"]))
    with pytest.raises(ConfigError, match="objective.whole_word_masking is an ELECTRA and BERT option; ALBERT"):
        validate(load_config(None, ["model.architecture=albert", "objective.whole_word_masking=true"]))


def test_generator_depth_sets_the_generator_tower_and_the_flops():
    half = config_with("full", generator_layers=1)
    params = perturbed_params(half)
    assert sorted(params["generator"]["encoder"]) == ["layer_0"]
    assert sorted(params["discriminator"]["encoder"]) == ["layer_0", "layer_1"]
    family = family_of(half.model)
    assert family.flops_per_token(half) < family.flops_per_token(config_with("full"))


@pytest.mark.slow
def test_a_gdes_run_with_whole_words_and_a_shallow_generator_exports_imports_and_resumes(prepared, tmp_path, capsys):
    """pretrain -> a refused change of sharing -> export -> import (the run's config) -> pretrain continues."""
    from electra_jax.cli import main
    from electra_jax.run_dir import load_run_params
    from tests.conftest import REPO, TINY
    options = ["objective.embedding_sharing=gdes", "objective.whole_word_masking=true", "model.generator_layers=1"]
    run = tmp_path / "run"

    def pretrain(run_dir, *overrides, config=REPO / "configs" / "electra_smoke.yaml"):
        return main(["pretrain", "--config", str(config), "--run-dir", str(run_dir), "--no-progress", *overrides,
                     "mesh.data=-1"])
    assert pretrain(run, *TINY, f"data.prepared={prepared}", "train.steps=4", "checkpoint.every_steps=2", *options) == 0
    _, params, _ = load_run_params(run, None)
    assert norm(params[DELTA]) > 0  # the RTD loss moved it
    capsys.readouterr()
    assert pretrain(run, *TINY, f"data.prepared={prepared}", "train.steps=6", *options[1:]) == 2
    error = capsys.readouterr().err
    assert "objective.embedding_sharing=full" in error and "objective.embedding_sharing=gdes" in error, error

    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    assert main(["import", str(tmp_path / "hf"), str(tmp_path / "imported"), "--config", str(run / "config.yaml")]) == 0
    _, again, _ = load_run_params(tmp_path / "imported", None)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(again)):
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6)
    capsys.readouterr()
    assert pretrain(tmp_path / "imported", f"data.prepared={prepared}", "train.steps=3",
                    config=tmp_path / "imported" / "config.yaml") == 0
    assert "step 3:" in capsys.readouterr().out
