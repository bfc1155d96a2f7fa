"""End-to-end runs of `electra-jax pretrain` in fresh processes: exact resume (after a stop or SIGTERM; SIGKILL
is test_curriculum.py's, inside a curriculum's second phase) and the NaN stop."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from electra_jax.metrics import read_metrics
from tests.conftest import REPO, TINY

pytestmark = pytest.mark.slow  # trains end to end (make test-fast leaves it out)


ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user has


def _command(run_dir, *overrides, corpus=None):
    data = [f"data.corpus=[{corpus}]"] if corpus else []
    return [sys.executable, "-m", "electra_jax", "pretrain", "--config", str(REPO / "configs" / "electra_smoke.yaml"),
            "--run-dir", str(run_dir), "--no-progress", *TINY, *data, *overrides]


def _run(run_dir, *overrides, corpus=None):
    return subprocess.run(_command(run_dir, *overrides, corpus=corpus), capture_output=True, text=True, env=ENV,
                          timeout=600, cwd=REPO)


def _losses(run_dir):
    return {r["step"]: r["loss"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")}


def _hashes(run_dir):
    return {r["step"]: r["batch_hash"] for r in read_metrics(Path(run_dir) / "metrics.jsonl")}


def test_exact_resume_in_a_new_process(tmp_path, tiny_corpus, tokenizer_dir):
    common = ("train.steps=20", "checkpoint.every_steps=5", f"data.tokenizer={tokenizer_dir}")
    straight = _run(tmp_path / "straight", *common, corpus=tiny_corpus)
    assert straight.returncode == 0, straight.stderr
    first = _run(tmp_path / "resumed", *common, "train.stop_after=10", corpus=tiny_corpus)
    assert first.returncode == 0, first.stderr
    second = _run(tmp_path / "resumed", *common, corpus=tiny_corpus)
    assert second.returncode == 0, second.stderr
    assert "resumed from step 10" in second.stdout + second.stderr
    a, b = _losses(tmp_path / "straight"), _losses(tmp_path / "resumed")
    assert sorted(a) == sorted(b) == list(range(1, 21))
    np.testing.assert_allclose([b[s] for s in range(1, 21)], [a[s] for s in range(1, 21)], rtol=0, atol=1e-6)
    assert _hashes(tmp_path / "straight") == _hashes(tmp_path / "resumed")
    for name in ("curves.png", "config.yaml", "metrics.jsonl"):
        assert (tmp_path / "resumed" / name).exists()
    assert list((tmp_path / "resumed" / "tensorboard").glob("events.out.tfevents.*"))


@pytest.fixture(scope="module")
def straight(prepared, tmp_path_factory):
    """An uninterrupted 300-step run: the trajectory the interrupted ones must follow (checkpoint settings do
    not change it)."""
    run_dir = tmp_path_factory.mktemp("straight")
    result = _run(run_dir, "train.steps=300", "checkpoint.every_steps=20", f"data.prepared={prepared}")
    assert result.returncode == 0, result.stderr
    return run_dir


def _assert_same_trajectory(straight_dir, other_dir, steps):
    a, b = _losses(straight_dir), _losses(other_dir)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    assert _hashes(straight_dir) == _hashes(other_dir)
    np.testing.assert_allclose([b[s] for s in range(1, steps + 1)], [a[s] for s in range(1, steps + 1)], rtol=0,
                               atol=1e-6)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_the_step_and_the_rerun_continues_the_trajectory(tmp_path, prepared, straight, stop):
    """SIGTERM (a spot VM's preemption notice) or Ctrl-C mid-run: the trainer saves the step it is on and
    exits with 128 + the signal; the same command resumes there and every later loss equals the
    uninterrupted run's (checked after SIGTERM)."""
    common = ("train.steps=300", "checkpoint.every_steps=1000", "checkpoint.every_minutes=30",
              f"data.prepared={prepared}")
    victim_dir = tmp_path / "preempted"
    victim = subprocess.Popen(_command(victim_dir, *common), env=ENV, cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    metrics, deadline = victim_dir / "metrics.jsonl", time.time() + 300
    while time.time() < deadline and victim.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 30:
            break
        time.sleep(0.02)
    victim.send_signal(stop)
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == 128 + stop, err[-2000:]
    saved = sorted(int(p.name) for p in (victim_dir / "checkpoints").iterdir() if p.name.isdigit())
    stopped = max(_losses(victim_dir))
    assert 30 <= stopped < 300 and saved[-1] == stopped, (saved, stopped)
    assert f"stopped on {stop.name}: saved step {stopped}" in out
    if stop == signal.SIGINT:  # the same save and stop as SIGTERM's; its resume is proven above
        return
    resumed = _run(victim_dir, *common)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step {stopped}" in resumed.stdout + resumed.stderr
    _assert_same_trajectory(straight, victim_dir, 300)


def test_prepared_data_must_match_the_model(tmp_path, prepared, tiny_corpus):
    from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
    other = tmp_path / "other-tokenizer"
    save_tokenizer(train_wordpiece([tiny_corpus], 250), other)
    cases = [((f"data.prepared={prepared}", f"data.tokenizer={other}"), "was made with another tokenizer"),
             ((f"data.prepared={prepared}", "data.seq_len=24"), "was prepared with --seq-len 32"),
             ((f"data.prepared={prepared}", "model.vocab_size=1000"), "model.vocab_size=1000 does not match"),
             ((f"data.prepared={tmp_path}",), "has no metadata.json")]
    for overrides, message in cases:
        result = _run(tmp_path / "run", "train.steps=3", *overrides)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
        assert result.returncode == 2 and len(errors) == 1 and message in errors[0], result.stderr
    # A run directory trained with one tokenizer refuses data prepared with another.
    assert _run(tmp_path / "run", "train.steps=3", f"data.prepared={prepared}").returncode == 0
    from electra_jax.data.prepare import PackOptions, prepare
    prepare([str(tiny_corpus)], other, tmp_path / "other-data", PackOptions(seq_len=32), workers=0, progress=False,
            log=lambda _: None)
    result = _run(tmp_path / "run", "train.steps=5", f"data.prepared={tmp_path / 'other-data'}")
    assert result.returncode == 2 and "was made with another tokenizer" in result.stderr
    prepare([str(tiny_corpus)], other, tmp_path / "albert-data", PackOptions(format="albert", seq_len=32), workers=0,
            progress=False, log=lambda _: None)
    result = _run(tmp_path / "run2", "train.steps=3", f"data.prepared={tmp_path / 'albert-data'}")
    assert result.returncode == 2 and "holds albert examples" in result.stderr


def test_nan_stops_the_run_and_keeps_the_last_good_checkpoint(tmp_path, tiny_corpus):
    run_dir = tmp_path / "run"
    good = _run(run_dir, "train.steps=4", "checkpoint.every_steps=2", corpus=tiny_corpus)
    assert good.returncode == 0, good.stderr
    checkpoints = run_dir / "checkpoints"
    before = {p.name: sorted(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in checkpoints.iterdir()}
    assert sorted(before) == ["2", "4"]
    # An absurd learning rate drives the parameters to overflow within a few steps.
    bad = _run(run_dir, "train.steps=40", "checkpoint.every_steps=100", "optimizer.learning_rate=1e30",
               corpus=tiny_corpus)
    assert bad.returncode == 3, bad.stdout + bad.stderr
    error = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(error) == 1 and "non-finite" in error[0] and "the last good checkpoint is step 4" in error[0]
    after = {p.name: sorted(f.stat().st_size for f in p.rglob("*") if f.is_file()) for p in checkpoints.iterdir()}
    assert after == before


def test_danish_help_text_300_steps(tmp_path, shared_data):
    """The acceptance run on real Danish text: clean exit, generator loss falls, æ ø å survive."""
    corpus = shared_data / "raw_text" / "libreoffice_help_da.txt"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    run_dir = tmp_path / "da"
    result = subprocess.run(
        [sys.executable, "-m", "electra_jax", "pretrain", "--config", str(REPO / "configs" / "electra_smoke.yaml"),
         "--run-dir", str(run_dir), "--no-progress", f"data.corpus=[{corpus}]", "data.vocab_size=8000",
         "train.steps=300", "checkpoint.every_steps=300"],
        capture_output=True, text=True, env=env, timeout=900, cwd=REPO)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    first, last = records[0]["generator_loss"], records[-1]["generator_loss"]
    print(f"generator loss: step {records[0]['step']} {first:.3f} -> step {records[-1]['step']} {last:.3f}")
    assert last < first - 1.0
    vocab = (run_dir / "tokenizer" / "vocab.txt").read_text(encoding="utf-8").splitlines()
    for char in ("æ", "ø", "å", "Æ", "Ø", "Å"):
        assert char in vocab, char
    from tokenizers import Tokenizer
    tokenizer = Tokenizer.from_file(str(run_dir / "tokenizer" / "tokenizer.json"))
    encoding = tokenizer.encode("Vælg Åbn og gem på én gang i dokumentet ø")
    assert "[UNK]" not in encoding.tokens
    assert tokenizer.decode(encoding.ids) == "Vælg Åbn og gem på én gang i dokumentet ø"


def test_spanish_bible_tokenizer_prepare_pretrain(tmp_path, shared_data):
    """The acceptance path on real text: `tokenizer train` -> `prepare` (2 workers) -> `pretrain` on it."""
    bible = shared_data / "raw_text" / "bible_es_reina_valera_1909.txt"

    def cli(*argv, timeout=600):
        result = subprocess.run([sys.executable, "-m", "electra_jax", *argv], capture_output=True, text=True,
                                env=ENV, timeout=timeout, cwd=REPO)
        assert result.returncode == 0, result.stderr
        return result.stdout

    report = cli("tokenizer", "train", "--input", str(bible), "--out", str(tmp_path / "tok"), "--vocab-size", "16000")
    assert "letters lost: none" in report
    vocab = set((tmp_path / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines())
    assert {"ñ", "á", "é", "í", "ó", "ú"} <= vocab
    summary = cli("prepare", "--input", str(bible), "--tokenizer", str(tmp_path / "tok"), "--seq-len", "64",
                  "--out", str(tmp_path / "prepared"), "--workers", "2", "--no-progress")
    counts = json.loads((tmp_path / "prepared" / "metadata.json").read_text())["counts"]
    assert counts["lines"] == 30_931 and counts["examples"] > 14_000 and counts["fill"] > 0.95
    assert "skipped or repaired: 3 documents split" in summary  # one 3.9 MB document (no blank lines)
    cli("pretrain", "--config", str(REPO / "configs" / "electra_smoke.yaml"), "--run-dir", str(tmp_path / "run"),
        "--no-progress", f"data.prepared={tmp_path / 'prepared'}", "train.steps=200", "checkpoint.every_steps=200")
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert records[-1]["step"] == 200 and records[-1]["generator_loss"] < records[0]["generator_loss"] - 2.0
