"""A run directory written by the code before the family registry (commit a532663) still resumes and exports:
the parameter tree, the checkpoint layout and config.yaml read the same.

The fixture, tests/fixtures/run_a532663, is 4 steps of the tiny ELECTRA of conftest.TINY on 40 documents of
the embedded corpus (`prepared/`, 32 tokens), made at that commit with
`electra-jax pretrain --config configs/electra_smoke.yaml --run-dir run data.prepared=prepared train.steps=4
checkpoint.every_steps=2 <TINY>`; its tensorboard/, curves.png and the step-2 checkpoint were left out."""
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import transformers

from electra_jax.config import load_config
from electra_jax.hf.export import export
from electra_jax.metrics import read_metrics
from electra_jax.models.electra import Electra
from electra_jax.run_dir import load_run_params
from electra_jax.train import pretrain
from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "run_a532663"


@pytest.mark.slow  # trains on for two steps
def test_an_old_run_directory_exports_and_resumes(tmp_path):
    shutil.copytree(FIXTURE, tmp_path / "old")
    run, prepared = tmp_path / "old" / "run", tmp_path / "old" / "prepared"

    export(run, tmp_path / "hf", log=lambda *_: None)  # the old step-4 checkpoint, read by today's code
    config, params, step = load_run_params(run, None)
    assert step == 4
    rng = np.random.default_rng(0)
    ids = rng.integers(5, config.model.vocab_size, (2, 20)).astype(np.int32)
    ours = Electra(config.model).apply({"params": params}, jnp.asarray(ids), jnp.zeros_like(ids), jnp.ones_like(ids),
                                       method=Electra.discriminator_logits)
    hf = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "hf" / "discriminator").eval()
    with torch.no_grad():
        theirs = hf(input_ids=torch.from_numpy(ids).long()).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=1e-4, rtol=1e-4)

    config = load_config(run / "config.yaml", [f"data.prepared={prepared}", "train.steps=6", "mesh.data=-1"])
    logged = []
    summary = pretrain(config, run, log=logged.append, progress=False)
    assert (summary["start_step"], summary["end_step"]) == (4, 6)
    assert any("resumed from step 4" in line for line in logged)
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(r["loss"]) for r in records)
    _, resumed, _ = load_run_params(run, 6)
    moved = jax.tree.map(lambda a, b: float(np.abs(a - b).max()), resumed, params)
    assert max(jax.tree.leaves(moved)) > 0  # it trained on from the old parameters
