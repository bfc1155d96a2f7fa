"""End-to-end runs of `electra-jax pretrain` in fresh processes: exact resume and the NaN stop."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, TINY


@pytest.fixture(scope="module")
def tokenizer_dir(tiny_corpus, tmp_path_factory):
    # Two run directories compared step by step must share a vocabulary (tokenizer training breaks
    # frequency ties in hash order); a resumed run reuses its own saved tokenizer anyway.
    from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
    out = tmp_path_factory.mktemp("tokenizer")
    save_tokenizer(train_wordpiece([tiny_corpus], 300), out)
    return out


def _run(run_dir, *overrides, corpus):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # one CPU device, as a user has
    command = [sys.executable, "-m", "electra_jax", "pretrain", "--config", str(REPO / "configs" / "electra_smoke.yaml"),
               "--run-dir", str(run_dir), "--no-progress", *TINY, f"data.corpus=[{corpus}]", *overrides]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)


def _losses(run_dir):
    records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records}


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
    for name in ("curves.png", "config.yaml", "metrics.jsonl"):
        assert (tmp_path / "resumed" / name).exists()
    assert list((tmp_path / "resumed" / "tensorboard").glob("events.out.tfevents.*"))


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
    assert len(error) == 1 and "non-finite" in error[0] and "Last good checkpoint: step 4" in error[0]
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
