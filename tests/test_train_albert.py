"""ALBERT through the shared trainer: sharded equals single-device, accumulation equals one batch, exact
resume in a new process, and the run learns."""
import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from electra_jax.config import load_config
from electra_jax.data.loader import PretrainingData
from electra_jax.data.text_tokenizer import load_text_tokenizer
from electra_jax.mesh import make_mesh
from electra_jax.metrics import read_metrics
from electra_jax.run_dir import prepare_data, special_ids
from electra_jax.train import setup_training
from electra_jax.validation import validate
from tests.conftest import REPO

pytestmark = pytest.mark.slow  # trains end to end (make test-fast leaves it out)

TINY_ALBERT = ["model.embedding_size=16", "model.hidden_size=32", "model.num_layers=4", "model.num_hidden_groups=2",
               "model.inner_group_num=1", "model.num_heads=2", "model.intermediate_size=64",
               "model.max_position_embeddings=32", "data.seq_len=32", "data.vocab_size=250",
               "objective.max_predictions=5", "train.batch_size=16", "train.log_every=1", "schedule.warmup_steps=2",
               "mesh.data=1"]


@pytest.fixture(scope="module")
def albert_data(tiny_corpus, tmp_path_factory):
    config = load_config(REPO / "configs" / "albert_smoke.yaml", TINY_ALBERT + [f"data.corpus=[{tiny_corpus}]",
                                                                             "train.steps=10"])
    run_dir = Path(tmp_path_factory.mktemp("albert-run"))
    config, (folder,), metadata = prepare_data(config, run_dir, log=lambda _: None)
    assert metadata["format"] == "albert" and metadata["tokenizer"]["kind"] == "sentencepiece"
    return config, folder, special_ids(metadata), load_text_tokenizer(run_dir / "tokenizer").word_starts(), run_dir


def _run_steps(config, devices, data, steps=3):
    _, folder, specials, word_starts, _ = data
    validate(config, len(devices))
    training = setup_training(config, make_mesh(config, devices), specials, word_starts)
    loader = PretrainingData(folder, config.train.batch_size, seed=0)
    state, history = training.init(), []
    for _ in range(steps):
        batch = {k: jax.device_put(v, training.batch_sharding) for k, v in next(loader).items()}
        state, metrics = training.step_fn(state, batch)
        history.append(jax.device_get(metrics))
    return state, history


def test_sharded_matches_single_device(albert_data):
    config = albert_data[0]
    _, single = _run_steps(config, jax.devices()[:1], albert_data)
    losses = np.array([m["loss"] for m in single])
    assert np.all(np.isfinite(losses)) and losses[0] != losses[-1]
    for shape in [(8, 1, 1), (2, 2, 2)]:
        sharded_config = dataclasses.replace(config, mesh=dataclasses.replace(config.mesh, data=shape[0],
                                                                              fsdp=shape[1], tensor=shape[2]))
        _, sharded = _run_steps(sharded_config, jax.devices(), albert_data)
        np.testing.assert_allclose([m["loss"] for m in sharded], losses, rtol=1e-5, atol=1e-5)


def test_accumulated_step_equals_full_batch(albert_data):
    config = albert_data[0]  # the smoke preset has no dropout: micro-batches see the same network
    results = []
    for accum in (1, 4):
        c = dataclasses.replace(config, train=dataclasses.replace(config.train, grad_accum_steps=accum))
        state, history = _run_steps(c, jax.devices()[:1], albert_data, steps=2)
        results.append((history[-1], jax.device_get(state.params)))
    (m1, p1), (m4, p4) = results
    for name in ("loss", "mlm_loss", "sop_loss", "mlm_accuracy", "sop_accuracy", "grad_norm"):
        np.testing.assert_allclose(m4[name], m1[name], rtol=1e-5, err_msg=name)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(a, b, atol=2e-6)


def test_exact_resume_in_a_new_process(tmp_path, albert_data):
    tokenizer_dir = albert_data[4] / "tokenizer"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}

    def run(run_dir, *overrides):
        command = [sys.executable, "-m", "electra_jax", "pretrain", "--config", str(REPO / "configs" / "albert_smoke.yaml"),
                   "--run-dir", str(run_dir), "--no-progress", *TINY_ALBERT, f"data.prepared={albert_data[1]}",
                   f"data.tokenizer={tokenizer_dir}", "train.steps=16", "checkpoint.every_steps=4", *overrides]
        result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=REPO)
        assert result.returncode == 0, result.stderr
        return result.stdout + result.stderr

    run(tmp_path / "straight")
    run(tmp_path / "resumed", "train.stop_after=8")
    assert "resumed from step 8" in run(tmp_path / "resumed")
    a, b = (read_metrics(tmp_path / name / "metrics.jsonl") for name in ("straight", "resumed"))
    assert [r["step"] for r in a] == [r["step"] for r in b] == list(range(1, 17))
    assert [r["batch_hash"] for r in a] == [r["batch_hash"] for r in b]
    np.testing.assert_allclose([r["loss"] for r in b], [r["loss"] for r in a], rtol=0, atol=1e-6)
    assert {"mlm_accuracy", "sop_accuracy"} <= set(a[-1])
