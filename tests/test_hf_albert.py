"""ALBERT import from and export to Hugging Face PyTorch: logits both ways to 1e-4, a bit-exact round trip,
MLM and SOP loss parity to 1e-5, the tokenizer files, and one-line errors."""
import json
import os
import shutil
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.objectives import albert, masking
from electra_jax.cli import main
from electra_jax.hf.export import export
from electra_jax.run_dir import load_run_params
from electra_jax.hf.importer import import_hf
from electra_jax.models.albert import Albert
from tests.conftest import REPO

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

VOCAB = 120


@pytest.fixture(scope="module")
def hf_folder(tiny_corpus, tmp_path_factory):
    """A random AlbertForPreTraining (2 groups of 2 shared layers, E != H) saved with a SentencePiece
    tokenizer, as a published ALBERT folder looks."""
    root = tmp_path_factory.mktemp("hf-albert")
    assert main(["tokenizer", "train", "--kind", "sentencepiece", "--input", str(tiny_corpus), "--out",
                 str(root / "tok"), "--vocab-size", str(VOCAB)]) == 0
    config = transformers.AlbertConfig(
        vocab_size=VOCAB, embedding_size=16, hidden_size=32, num_hidden_layers=4, num_hidden_groups=2,
        inner_group_num=2, num_attention_heads=4, intermediate_size=48, hidden_act="gelu_new",
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout_prob=0.0,
        max_position_embeddings=40, layer_norm_eps=1e-12)
    torch.manual_seed(0)
    model = transformers.AlbertForPreTraining(config).eval()
    with torch.no_grad():  # non-trivial LayerNorm and bias values, so a wrong mapping cannot hide
        for name, tensor in model.named_parameters():
            if name.endswith(("bias", "LayerNorm.weight", "layer_norm.weight")):
                tensor.add_(torch.randn_like(tensor) * 0.1)
    folder = root / "albert"
    model.save_pretrained(folder)
    for name in ("spiece.model", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(root / "tok" / name, folder / name)
    return folder


def _batch():
    rng = np.random.default_rng(0)
    ids = rng.integers(5, VOCAB, size=(3, 20))
    ids[:, 0], ids[:, 9], ids[:, 19] = 2, 3, 3
    ids[2, 15:] = 0
    ids[2, 14] = 3
    segments = np.zeros_like(ids)
    segments[:, 10:] = 1
    return ids, segments, (ids != 0).astype(np.int64)


def _hf_outputs(folder, cls=None):
    model = (cls or transformers.AlbertForPreTraining).from_pretrained(folder).eval()
    ids, segments, attention = _batch()
    with torch.no_grad():
        return model(torch.from_numpy(ids), attention_mask=torch.from_numpy(attention),
                     token_type_ids=torch.from_numpy(segments))


def _our_outputs(run_dir):
    config, params, _ = load_run_params(run_dir, None)
    ids, segments, attention = _batch()
    positions = np.tile(np.arange(ids.shape[1]), (ids.shape[0], 1))
    mlm, sop = Albert(config.model).apply({"params": params}, ids, segments, attention, positions)
    return config, params, np.asarray(mlm), np.asarray(sop)


def test_import_export_round_trip(hf_folder, tmp_path, capsys):
    import_hf(hf_folder, tmp_path / "run")
    config, params, mlm, sop = _our_outputs(tmp_path / "run")
    assert (config.model.architecture, config.model.num_hidden_groups, config.model.inner_group_num) == ("albert", 2, 2)
    hf = _hf_outputs(hf_folder)
    real = _batch()[2].astype(bool)
    np.testing.assert_allclose(mlm[real], hf.prediction_logits.numpy()[real], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(sop, hf.sop_logits.numpy(), atol=1e-4, rtol=1e-4)

    export(tmp_path / "run", tmp_path / "out")
    exported = _hf_outputs(tmp_path / "out")
    np.testing.assert_allclose(exported.prediction_logits.numpy()[real], mlm[real], atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(exported.sop_logits.numpy(), sop, atol=1e-4, rtol=1e-4)
    from safetensors.numpy import load_file
    original, written = load_file(str(hf_folder / "model.safetensors")), load_file(str(tmp_path / "out" / "model.safetensors"))
    for name, tensor in written.items():
        assert np.array_equal(tensor, original[name]), name  # bit-exact
    assert json.loads((tmp_path / "out" / "config.json").read_text())["architectures"] == ["AlbertForPreTraining"]
    masked_lm = _hf_outputs(tmp_path / "out", transformers.AlbertForMaskedLM)
    np.testing.assert_allclose(masked_lm.logits.numpy()[real], mlm[real], atol=1e-4, rtol=1e-4)
    # The tokenizer travels with the weights and gives transformers our ids.
    from electra_jax.data.text_tokenizer import load_text_tokenizer
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tmp_path / "out"))
    ours = load_text_tokenizer(tmp_path / "run" / "tokenizer")
    for text in ("Åse går på øen i Aarhus.", "Vi tæller en, to, tre."):
        assert tokenizer(text)["input_ids"] == [2, *ours.encode_lines([text])[0], 3]
    assert "AlbertForPreTraining" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.slow
def test_mlm_and_sop_loss_match_hf(hf_folder, tmp_path):
    import_hf(hf_folder, tmp_path / "run")
    config, params, _, _ = _our_outputs(tmp_path / "run")
    ids, segments, attention = _batch()
    selected = np.zeros(ids.shape, bool)
    selected[:, [2, 5, 6, 12]] = True
    masked = masking.mask_selected(jax.random.key(0), jnp.asarray(ids), jnp.asarray(selected), max_predictions=6,
                                      mask_id=4,
                                      mask_token_prob=0.8, random_token_prob=0.1, random_ids=(5, VOCAB))
    sop_labels = np.array([0, 1, 1])
    mlm, sop = Albert(config.model).apply({"params": params}, masked.input_ids_BxL, segments, attention,
                                          masked.positions_BxP)
    sums = albert.albert_sums(mlm, sop, masked, sop_labels)
    labels = np.full(ids.shape, -100)
    for row in range(3):
        real = np.asarray(masked.weights_BxP[row]) > 0
        labels[row, np.asarray(masked.positions_BxP[row])[real]] = np.asarray(masked.labels_BxP[row])[real]
    model = transformers.AlbertForPreTraining.from_pretrained(hf_folder).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(np.asarray(masked.input_ids_BxL)).long(), attention_mask=torch.from_numpy(attention),
                    token_type_ids=torch.from_numpy(segments), labels=torch.from_numpy(labels),
                    sentence_order_label=torch.from_numpy(sop_labels))
        hf_mlm = torch.nn.functional.cross_entropy(out.prediction_logits.reshape(-1, VOCAB), torch.from_numpy(labels).reshape(-1))
        hf_sop = torch.nn.functional.cross_entropy(out.sop_logits, torch.from_numpy(sop_labels))
    np.testing.assert_allclose(float(sums.mlm_loss / sums.num_predictions), float(hf_mlm), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(float(sums.sop_loss / sums.num_sequences), float(hf_sop), rtol=1e-5, atol=1e-5)
    ours = albert.albert_loss(sums, sums.num_predictions, sums.num_sequences)
    np.testing.assert_allclose(float(ours), float(out.loss), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_import_masked_lm_keeps_fresh_heads_and_continues_pretraining(hf_folder, tmp_path, tiny_corpus):
    masked_lm = transformers.AlbertForMaskedLM.from_pretrained(hf_folder)
    folder = tmp_path / "mlm"
    masked_lm.save_pretrained(folder)
    for name in ("spiece.model", "tokenizer_config.json"):
        shutil.copy(hf_folder / name, folder / name)
    logged = []
    import_hf(folder, tmp_path / "run", log=logged.append)
    assert any("freshly initialised" in line and "sop_classifier/kernel" in line and "pooler/kernel" in line
               for line in logged)
    _, _, mlm, _ = _our_outputs(tmp_path / "run")
    real = _batch()[2].astype(bool)
    np.testing.assert_allclose(mlm[real], _hf_outputs(hf_folder).prediction_logits.numpy()[real], atol=1e-4, rtol=1e-4)
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    result = subprocess.run([sys.executable, "-m", "electra_jax", "pretrain", "--config",
                             str(tmp_path / "run" / "config.yaml"), "--run-dir", str(tmp_path / "run"), "--no-progress",
                             f"data.corpus=[{tiny_corpus}]", "data.seq_len=32", "objective.max_predictions=5",
                             "train.steps=3", "train.batch_size=8", "schedule.warmup_steps=1", "mesh.data=1"],
                            capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
    assert result.returncode == 0, result.stderr
    assert "resumed from step 0" in result.stdout + result.stderr


def test_import_errors_are_one_line(hf_folder, tmp_path, capsys):
    broken = tmp_path / "broken"
    shutil.copytree(hf_folder, broken)
    settings = json.loads((broken / "config.json").read_text())
    (broken / "config.json").write_text(json.dumps({**settings, "hidden_act": "relu"}))
    assert main(["import", str(broken), str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "hidden_act is 'relu'" in err[0]
    (broken / "config.json").write_text(json.dumps({**settings, "num_hidden_groups": 1}))
    assert main(["import", str(broken), str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unexpected" in err[0] and "albert_layer_groups.1" in err[0]
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
