"""`electra-jax distill`: a tiny random BERT teacher (built with transformers, saved, imported) distilled into
its bottom layers on Swedish text; the loss falls, frozen embeddings stay bit-identical, the exported student
loads with `from_pretrained` and agrees with us to 1e-4, sharded runs agree with one device and a resumed run
follows the uninterrupted one exactly."""
import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from electra_jax.cli import main
from electra_jax.config import ConfigError
from electra_jax.run_dir import load_run_params
from electra_jax.metrics import read_metrics
from electra_jax.models.bert import Bert
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # trains end to end (make test-fast leaves it out)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

ENV_ONE_DEVICE = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
COMMON = ["train.batch_size=16", "data.seq_len=64", "schedule.warmup_steps=20", "optimizer.learning_rate=1e-3",
          "train.log_every=1"]


@pytest.fixture(scope="module")
def swedish(shared_data):
    return shared_data / "raw_text" / "libreoffice_help_sv.txt"


@pytest.fixture(scope="module")
def teacher(swedish, tmp_path_factory):
    """(HF folder, imported run directory) of a random 4-layer BertForMaskedLM with a cased Swedish WordPiece
    vocabulary. Initialised with std 0.2 (BERT's is 0.02) so that its layers change the hidden states and its
    attention is far from uniform: otherwise the bottom layers would already match the top ones."""
    root = tmp_path_factory.mktemp("teacher")
    assert main(["tokenizer", "train", "--input", str(swedish), "--out", str(root / "tok"), "--vocab-size",
                 "2000"]) == 0
    vocab = len((root / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines())
    config = transformers.BertConfig(vocab_size=vocab, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                                     intermediate_size=128, max_position_embeddings=128, initializer_range=0.2)
    torch.manual_seed(0)
    folder = root / "hf"
    transformers.BertForMaskedLM(config).save_pretrained(folder)
    shutil.copy(root / "tok" / "vocab.txt", folder / "vocab.txt")
    settings = json.loads((root / "tok" / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "tokenizer_class": "BertTokenizer"}))
    assert main(["import", str(folder), str(root / "run")]) == 0
    return folder, root / "run"


@pytest.fixture(scope="module")
def prepared_sv(swedish, teacher, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared-sv") / "data"
    assert main(["prepare", "--input", str(swedish), "--tokenizer", str(teacher[1] / "tokenizer"), "--out", str(out),
                 "--seq-len", "64", "--workers", "0", "--no-progress"]) == 0
    return out


def _distill(run_dir, teacher_dir, data, *extra):
    """One CPU device in a fresh process, as a user runs it."""
    command = [sys.executable, "-m", "electra_jax", "distill", "--teacher", str(teacher_dir), "--data", str(data),
               "--run-dir", str(run_dir), "--no-progress", *extra]
    return subprocess.run(command, capture_output=True, text=True, env=ENV_ONE_DEVICE, timeout=600, cwd=REPO)


def _flat(tree) -> dict[str, np.ndarray]:
    """{"embeddings/LayerNorm/scale": array, ...}"""
    return {"/".join(key.key for key in path): np.asarray(leaf)
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


@pytest.fixture(scope="module")
def student(teacher, prepared_sv, tmp_path_factory):
    """200 steps of configs/distill_smoke.yaml: 2 of the teacher's 4 layers, embeddings frozen; evaluated at
    steps 100 and 200 on two batches of a separate prepared folder (here the training data itself)."""
    run = tmp_path_factory.mktemp("student") / "run"
    done = _distill(run, teacher[1], prepared_sv, "--config", str(REPO / "configs" / "distill_smoke.yaml"),
                    "--student-layers", "2", "train.log_every=1", f"data.eval_prepared={prepared_sv}",
                    "train.eval_every=100", "train.eval_batches=2")
    assert done.returncode == 0, done.stderr
    assert "distilling 4 -> 2 layers, layer map 2:4, embeddings frozen" in done.stdout
    return run


def test_distillation_cuts_the_loss_keeps_frozen_embeddings_and_exports(teacher, prepared_sv, student, tmp_path):
    run = student
    metrics = {r["step"]: r for r in read_metrics(run / "metrics.jsonl")}
    first, last = metrics[1], metrics[200]
    print(f"distillation loss: step 1 {first['loss']:.4f} (hidden {first['hidden_loss']:.4f}, attention "
          f"{first['attention_loss']:.5f}) -> step 200 {last['loss']:.4f} (hidden {last['hidden_loss']:.4f}, "
          f"attention {last['attention_loss']:.5f})")
    assert last["loss"] < 0.25 * first["loss"]
    assert last["hidden_loss"] < 0.25 * first["hidden_loss"]
    assert last["attention_loss"] < 0.5 * first["attention_loss"]
    assert [step for step in metrics if "eval_loss" in metrics[step]] == [100, 200]
    assert last["eval_hidden_loss"] < 0.25 * first["hidden_loss"] and last["eval_attention_loss"] > 0

    _, teacher_params, _ = load_run_params(teacher[1], None)
    config, student, step = load_run_params(run, None)
    assert (step, config.model.architecture, config.model.num_layers) == (200, "bert", 2)
    ours, theirs = _flat(student), _flat(teacher_params)
    frozen = [name for name in ours if name.startswith(("embeddings/", "pooler/", "predictions_"))]
    assert len(frozen) == 12 and all(ours[name].tobytes() == theirs[name].tobytes() for name in frozen)  # bit for bit
    assert not np.array_equal(ours["encoder/layer_1/output/kernel"], theirs["encoder/layer_1/output/kernel"])
    assert "encoder/layer_2/output/kernel" not in ours

    assert main(["export", str(run), str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "Distilled" in card and "2 of the teacher's 4 layers" in card
    assert (tmp_path / "hf" / "vocab.txt").read_text() == (teacher[0] / "vocab.txt").read_text()
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.model.vocab_size, size=(2, 24))
    ids[:, 0], ids[:, -1], ids[1, 18:] = 2, 3, 0
    segments, attention = np.zeros_like(ids), (ids != 0).astype(np.int64)
    positions = np.tile(np.arange(ids.shape[1]), (2, 1))
    logits = np.asarray(Bert(config.model).apply({"params": student}, ids, segments, attention, positions))
    hf = transformers.BertForMaskedLM.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():
        reference = hf(torch.from_numpy(ids), attention_mask=torch.from_numpy(attention),
                       token_type_ids=torch.from_numpy(segments)).logits.numpy()
    real = attention.astype(bool)
    np.testing.assert_allclose(logits[real], reference[real], atol=1e-4, rtol=1e-4)

    again = _distill(run, teacher[1], prepared_sv, "--student-layers", "3", "train.steps=200", *COMMON)
    assert again.returncode == 2 and "was started with another student_layers" in again.stderr


def test_the_student_fine_tunes_on_swedish_ner(student, shared_data, tmp_path):
    """The Webbnyheter corpus as it is (IO tags, 0 for outside, one line without a tag, no dev split) through
    `finetune`; the exported BertForTokenClassification agrees with us."""
    corpus = shared_data / "extra_ner"
    out = tmp_path / "ner"
    assert main(["finetune", "--task", "ner", "--train", str(corpus / "sv_webbnyheter2012_train_corpus.txt"),
                 "--dev-fraction", "0.1", "--outside-tag", "0", "--skip-malformed", "--init", str(student),
                 "--out", str(out), "--epochs", "3", "--learning-rate", "2e-3", "--seq-len", "64"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["labels"] == ["B-LOC", "B-MISC", "B-ORG", "B-PER", "I-LOC", "I-MISC", "I-ORG", "I-PER", "O"]
    assert "1 malformed line(s) left out (line 90310)" in results["notes"]["train"]
    print(f"Swedish NER dev F1 of the random teacher's 2-layer student: {results['dev']['mean']:.4f}")
    assert results["dev"]["mean"] > 0.03  # all-O predictions score 0
    from tests.test_finetune import _assert_hf_parity
    _assert_hf_parity(student, out / "hf", True, ["Inger Atterstam bor i Göteborg .", "Hej ,"],
                      ["Anders Wirdheim .", "jodå , det är Volvo ."])


def _metrics(run):
    return {r["step"]: r for r in read_metrics(run / "metrics.jsonl")}


def test_sharded_resumed_distillation_with_logit_and_mlm_terms(teacher, prepared_sv, tmp_path):
    """On 8 fake devices: data x fsdp x tensor = 2 x 2 x 2 with 2 accumulated micro-batches (the teacher runs
    inside the scanned loss) agrees with 8-way data parallelism on whole batches (no dropout, so the two do the
    same arithmetic); a run stopped at step 3 and resumed is bit-identical to the uninterrupted one. Trainable
    embeddings and every loss on, the teacher read straight from its HF folder in one run and from its import
    in the others."""
    common = ["--data", str(prepared_sv), "--student-layers", "2", "--layer-map",
              "1:2,2:4", "--no-freeze-embeddings", "--no-progress", "train.steps=6", "checkpoint.every_steps=3",
              "distill.logit_weight=1", "distill.mlm_weight=0.5", "distill.temperature=2",
              "objective.mask_token_prob=0.8", "objective.random_token_prob=0.1", *COMMON, "schedule.warmup_steps=2",
              "model.dropout_rate=0", "model.attention_dropout_rate=0"]
    hf, imported = ["--teacher", str(teacher[0])], ["--teacher", str(teacher[1])]
    data, mesh = ["mesh.data=8"], ["mesh.data=2", "mesh.fsdp=2", "mesh.tensor=2", "train.grad_accum_steps=2"]
    assert main(["distill", "--run-dir", str(tmp_path / "data"), *imported, *common, *data]) == 0
    assert main(["distill", "--run-dir", str(tmp_path / "mesh"), *hf, *common, *mesh]) == 0
    assert main(["distill", "--run-dir", str(tmp_path / "resumed"), *imported, *common, *mesh, "train.stop_after=3"]) == 0
    assert main(["distill", "--run-dir", str(tmp_path / "resumed"), *imported, *common, *mesh]) == 0
    data, mesh, resumed = (_metrics(tmp_path / n) for n in ("data", "mesh", "resumed"))
    keys = ("loss", "hidden_loss", "attention_loss", "logit_loss", "mlm_loss", "mlm_accuracy", "grad_norm")
    for step in range(1, 7):
        for key in keys:
            assert resumed[step][key] == mesh[step][key], (step, key)
            np.testing.assert_allclose(mesh[step][key], data[step][key], rtol=1e-4, atol=1e-5, err_msg=f"{step} {key}")
        assert resumed[step]["batch_hash"] == mesh[step]["batch_hash"]
    assert mesh[6]["loss"] < mesh[1]["loss"]
    _, teacher_params, _ = load_run_params(teacher[1], None)
    _, student, _ = load_run_params(tmp_path / "mesh", None)
    assert not np.array_equal(student["embeddings"]["word_embeddings"]["embedding"],
                              teacher_params["embeddings"]["word_embeddings"]["embedding"])  # trained this time


def test_bad_distillation_inputs_are_one_line_errors(teacher, prepared_sv, tmp_path, capsys):
    body = tmp_path / "bert-model"  # the teacher without its MLM head
    transformers.BertModel.from_pretrained(teacher[0]).save_pretrained(body)
    for name in ("vocab.txt", "tokenizer_config.json"):
        shutil.copy(teacher[0] / name, body / name)
    capsys.readouterr()  # transformers' progress bars
    cases = [
        (["--student-layers", "5"], "exceeds the teacher's 4 layers"),
        (["--student-layers", "2", "--layer-map", "2:7"], "distill.layer_map pair 2:7 is out of range"),
        (["--student-layers", "2", "--layer-map", "0:0"], "the embedding output (0) has no attention"),
        (["--student-layers", "2", "--layer-map", "2-4"], "must look like STUDENT:TEACHER"),
        (["--student-layers", "2", "distill.hidden_weight=0", "distill.attention_weight=0"], "every distill.*_weight is 0"),
        (["--student-layers", "2", "model.attention=jax", "model.attention_dropout_rate=0"],
         "distill.attention_weight needs the attention probabilities"),
        (["--student-layers", "2", "--teacher", str(body), "distill.logit_weight=1"], "has no MLM head"),
    ]
    for extra, message in cases:
        code = main(["distill", "--teacher", str(teacher[1]), "--data", str(prepared_sv), "--run-dir",
                     str(tmp_path / "bad"), "--no-progress", *extra, "mesh.data=-1"])
        err = capsys.readouterr().err
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (extra, err)
    assert not (tmp_path / "bad").exists()  # refused before the run directory is made
    other = tmp_path / "other-tok"
    assert main(["tokenizer", "train", "--input", str(REPO / "README.md"), "--out", str(other), "--vocab-size", "200"]) == 0
    assert main(["prepare", "--input", str(REPO / "README.md"), "--tokenizer", str(other), "--out",
                 str(tmp_path / "other-data"), "--seq-len", "64", "--workers", "0", "--no-progress"]) == 0
    code = main(["distill", "--teacher", str(teacher[1]), "--student-layers", "2", "--data", str(tmp_path / "other-data"),
                 "--run-dir", str(tmp_path / "bad2"), "--no-progress", "mesh.data=-1", *COMMON])
    assert code == 2 and "made with another tokenizer" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no teacher"):
        from electra_jax.config import load_config
        from electra_jax.distill import distill
        distill(load_config(None, ["mesh.data=-1"]), tmp_path / "bad3")
