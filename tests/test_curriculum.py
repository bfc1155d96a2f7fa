"""The length curriculum (`train.phases`): phases split the steps and reshape the run's config; bad phases and
their data are refused in one line before any compile; a resume keeps the phases begun; `bench` times each
phase's shape (test_bench.py); and a curriculum run reads each phase's own data under one schedule, resuming exactly at a
phase boundary (falling back there past a damaged checkpoint) and after SIGKILL inside a phase."""
import contextlib
import dataclasses
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

from electra_jax.cli import main
from electra_jax.config import ConfigError, load_config, save_config
from electra_jax.data.loader import PretrainingData, batch_hash
from electra_jax.metrics import read_metrics
from electra_jax.optim import make_schedule
from electra_jax.phases import describe_steps, phase_of, run_phases, started, tokens_seen
from electra_jax.run_dir import check_resume
from tests.conftest import REPO, TINY

SMOKE = str(REPO / "configs" / "electra_smoke.yaml")
# The killed run's process sees the test process's 8 fake devices, so its steps match the in-process runs'.
ENV = dict(os.environ)


def _config(overrides):
    return load_config(SMOKE, ["schedule.warmup_steps=2", *overrides])


def _phases(*phases) -> str:
    return "train.phases=[" + ", ".join("{" + ", ".join(f"{k}: {v}" for k, v in p.items()) + "}" for p in phases) + "]"


def test_phases_split_the_steps_and_reshape_each_phase():
    config = _config(["model.max_position_embeddings=512", "train.steps=1000", "objective.max_predictions=0",
                                 _phases(dict(steps=900, seq_len=128, batch_size=64),
                                         dict(steps=100, seq_len=512, batch_size=16))])
    first, second = run_phases(config)
    assert (first.first, first.last, second.first, second.last) == (1, 900, 901, 1000)
    assert (first.seq_len, first.batch_size, second.seq_len, second.batch_size) == (128, 64, 512, 16)
    # The masking budget follows each phase's length (google-research/electra's int((0.15 + 0.005) * L)).
    assert (first.config.max_predictions, second.config.max_predictions) == (19, 79)
    assert first.config.train.steps == second.config.train.steps == 1000  # one schedule over both
    assert [phase_of((first, second), s).index for s in (0, 1, 900, 901, 1000, 1001)] == [0, 0, 0, 1, 1, 1]
    assert [p.index for p in started((first, second), 900)] == [0]
    assert [p.index for p in started((first, second), 901)] == [0, 1]
    (only,) = run_phases(dataclasses.replace(config, train=dataclasses.replace(config.train, phases=())))
    assert (only.first, only.last, only.seq_len, only.batch_size, only.named) == (1, 1000, 64, 32, False)
    # What an exported model card says it was trained on.
    assert tokens_seen(config, 950) == 900 * 64 * 128 + 50 * 16 * 512
    assert describe_steps(config, 950) == ("950 steps in 2 phases (900 of batch 64 x sequence length 128, then 50 of "
                                           "batch 16 x sequence length 512)")
    assert describe_steps(config, 900) == "900 steps of batch 64 x sequence length 128"
    assert tokens_seen(config, 1100) == 900 * 64 * 128 + 200 * 16 * 512  # resumed with fewer train.steps
    single = dataclasses.replace(config, train=dataclasses.replace(config.train, phases=()))
    assert (tokens_seen(single, 10), describe_steps(single, 0)) == (10 * 32 * 64, "0 steps of batch 32 x sequence length 64")
    assert tokens_seen(single, 1200) == 1200 * 32 * 64


def test_phases_survive_config_yaml(tmp_path):
    config = _config(["train.steps=30", "data.prepared=q", _phases(dict(steps=10, seq_len=32, batch_size=8),
                                                           dict(steps=20, seq_len=64, batch_size=4, prepared="p"))])
    save_config(config, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").train == config.train
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["phases"][1]["prepared"] == "p"


@pytest.mark.parametrize("overrides, message", [
    (["train.steps=25", _phases(dict(steps=10, seq_len=32, batch_size=8), dict(steps=10, seq_len=64, batch_size=8))],
     "train.phases run 20 steps in all, but train.steps=25; set train.steps=20"),
    (["train.steps=20", _phases(dict(steps=10, seq_len=32, batch_size=8), dict(steps=10, seq_len=256, batch_size=8))],
     "train.phases[1].seq_len=256 exceeds model.max_position_embeddings=128; the position table is sized once, for "
     "the longest phase"),
    (["train.steps=20", "train.grad_accum_steps=2",
      _phases(dict(steps=10, seq_len=32, batch_size=8), dict(steps=10, seq_len=64, batch_size=3))],
     "config: train.grad_accum_steps=2 does not divide train.phases[1].batch_size=3"),
    (["train.steps=20", _phases(dict(steps=10, seq_len=32, batch_size=8), dict(steps=0, seq_len=64, batch_size=8))],
     "train.phases[1].steps must be positive"),
    (["train.steps=20", "data.corpus=[a.txt]",
      _phases(dict(steps=10, seq_len=32, batch_size=8, prepared="p"), dict(steps=10, seq_len=64, batch_size=8))],
     "train.phases[0].prepared names prepared data, but data.corpus is given"),
    (["train.steps=20", _phases(dict(steps=10, seq_len=32, batch_size=8, prepared="p"),
                                dict(steps=10, seq_len=64, batch_size=8))],
     "train.phases[1] has no data while other phases have prepared folders"),
    (["train.steps=20", "data.eval_prepared=e",
      _phases(dict(steps=10, seq_len=32, batch_size=8), dict(steps=10, seq_len=64, batch_size=8))],
     "data.eval_prepared holds one length, but train.phases run at 32, 64 tokens"),
    (["train.steps=20", "distill.teacher=t", _phases(dict(steps=20, seq_len=32, batch_size=8))],
     "train.phases is a pretraining curriculum; a distillation runs at one data.seq_len"),
    (["train.steps=20", "train.phases=[{steps: 20, seq_len: 32, batch: 8}]"],
     "unknown key 'train.phases[0].batch'"),
])
def test_bad_phases_are_one_line_naming_the_phase(overrides, message):
    with pytest.raises(ConfigError) as raised:
        _config(overrides)
    assert message in str(raised.value) and "\n" not in str(raised.value)


def test_the_runs_own_length_and_batch_are_not_checked_under_phases():
    """With train.phases, data.seq_len and train.batch_size are not read: only the phases' shapes must fit."""
    _config(["train.steps=20", "train.grad_accum_steps=3",  # 3 does not divide the preset's batch of 32
             _phases(dict(steps=10, seq_len=32, batch_size=6), dict(steps=10, seq_len=64, batch_size=9))])
    _config(["train.steps=20", "model.max_position_embeddings=512", "objective.max_predictions=100",  # > 64
             _phases(dict(steps=10, seq_len=256, batch_size=8), dict(steps=10, seq_len=512, batch_size=8))])
    with pytest.raises(ConfigError, match=r"objective.max_predictions=100 exceeds train.phases\[0\].seq_len=64$"):
        _config(["train.steps=20", "objective.max_predictions=100",
                 _phases(dict(steps=10, seq_len=64, batch_size=8), dict(steps=10, seq_len=128, batch_size=8))])


@pytest.fixture(scope="module")
def prepared_16(tiny_corpus, tokenizer_dir, tmp_path_factory):
    """The tiny corpus at 16 tokens with the session's tokenizer, a tenth of its documents held out."""
    return _prepare(tiny_corpus, tokenizer_dir, tmp_path_factory.mktemp("prepared16") / "data", 16)


@pytest.fixture(scope="module")
def prepared_32(tiny_corpus, tokenizer_dir, tmp_path_factory):
    """The same at 32 tokens (the same documents held out: the split hashes each document's text)."""
    return _prepare(tiny_corpus, tokenizer_dir, tmp_path_factory.mktemp("prepared32") / "data", 32)


def _prepare(corpus, tokenizer_dir, out, seq_len):
    from electra_jax.data.prepare import PackOptions, prepare
    prepare([str(corpus)], tokenizer_dir, out, PackOptions(seq_len=seq_len, eval_fraction=EVAL_FRACTION), workers=0,
            progress=False, log=lambda _: None)
    return out


EVAL_FRACTION = 0.1


def _curriculum(prepared_16, prepared, first_steps=40, second_steps=40, second_batch=8):
    return [f"data.prepared={prepared}", f"train.steps={first_steps + second_steps}",
            _phases(dict(steps=first_steps, seq_len=16, batch_size=16, prepared=prepared_16),
                    dict(steps=second_steps, seq_len=32, batch_size=second_batch))]


def _pretrain_args(run_dir, *overrides):
    # Saves every 15 steps and evaluates every 25: the first phase's end (step 40) is neither.
    return ["pretrain", "--config", SMOKE, "--run-dir", str(run_dir), "--no-progress", *TINY, "mesh.data=-1",
            "checkpoint.every_steps=15", "checkpoint.keep=20", "train.eval_every=25", "train.eval_batches=2",
            *overrides]


def test_a_phase_whose_data_has_another_length_is_refused_before_compiling(tmp_path, prepared, prepared_16, capsys,
                                                                           monkeypatch):
    import electra_jax.train as train
    monkeypatch.setattr(train, "setup_training", lambda *a, **k: pytest.fail("compiled before refusing the data"))
    # The second phase falls back to data.prepared, which holds 16-token examples, not its 32.
    overrides = [f"data.prepared={prepared_16}", "train.steps=20",
                 _phases(dict(steps=10, seq_len=16, batch_size=16), dict(steps=10, seq_len=32, batch_size=8))]
    assert main(_pretrain_args(tmp_path / "run", *overrides)) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith(f"data.prepared={prepared_16} was prepared with --seq-len 16, but train.phases[1].seq_len=32; "
                        f"set train.phases[1].prepared to data prepared with --seq-len 32"), err
    missing = tmp_path / "nowhere"
    overrides = [f"data.prepared={prepared}", "train.steps=20",
                 _phases(dict(steps=10, seq_len=16, batch_size=16, prepared=missing),
                         dict(steps=10, seq_len=32, batch_size=8))]
    assert main(_pretrain_args(tmp_path / "run2", *overrides)) == 2
    assert f"train.phases[0].prepared={missing} has no metadata.json" in capsys.readouterr().err
    assert not (tmp_path / "run2").exists()


def _fake_run(run_dir, overrides, step):
    """A run directory as a trainer leaves it: config.yaml and a finished checkpoint at `step`."""
    (run_dir / "checkpoints" / str(step)).mkdir(parents=True)
    save_config(_config(overrides), run_dir / "config.yaml")


@pytest.mark.parametrize("now, step, refused", [
    (dict(second_steps=50), 45, False),  # the phase under way runs longer
    (dict(second_batch=4), 40, False),  # a phase not yet begun changes at the boundary
    (dict(second_batch=4), 45, True),  # ... but not once begun
    (dict(first_steps=30, second_steps=50), 35, True),  # the second phase would have begun before step 35
])
def test_a_resume_keeps_the_phases_begun(tmp_path, now, step, refused):
    was = _curriculum("a", "b")
    _fake_run(tmp_path, was, step)
    config = _config(_curriculum("a", "b", **now))
    if refused:
        with pytest.raises(ConfigError, match=f"has begun .* \\(checkpoints up to step {step}\\), but this config"):
            check_resume(config, tmp_path)
    else:
        check_resume(config, tmp_path)


def test_a_single_phase_run_resumes_into_a_curriculum(tmp_path):
    """BERT's recipe after the fact: a run at one length, continued at a longer one from its last step."""
    _fake_run(tmp_path, ["train.steps=40", "data.seq_len=16", "train.batch_size=16"], 40)
    check_resume(_config(_curriculum("a", "b")), tmp_path)
    with pytest.raises(ConfigError, match="has begun from step 1 seq_len 16 batch 16"):
        check_resume(_config(_curriculum("a", "b", first_steps=30, second_steps=50)), tmp_path)


# ---------------------------------------------------------------------------- training through the phases

def _records(run_dir):
    return {r["step"]: r for r in read_metrics(run_dir / "metrics.jsonl")}


def _assert_same_trajectory(a_dir, b_dir, steps):
    a, b = _records(a_dir), _records(b_dir)
    assert sorted(a) == sorted(b) == list(range(1, steps + 1))
    assert [a[s]["batch_hash"] for s in a] == [b[s]["batch_hash"] for s in a]
    np.testing.assert_allclose([b[s]["loss"] for s in a], [a[s]["loss"] for s in a], rtol=0, atol=1e-6)


@pytest.fixture(scope="module")
def straight(prepared_32, prepared_16, tmp_path_factory):
    """80 uninterrupted steps: 40 of 16 x 16 tokens, then 40 of 8 x 32, and what the run printed."""
    run_dir = tmp_path_factory.mktemp("curriculum") / "straight"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(_pretrain_args(run_dir, *_trained(prepared_16, prepared_32))) == 0
    return run_dir, printed.getvalue()


def _trained(prepared_16, prepared_32):
    return [*_curriculum(prepared_16, prepared_32), f"data.eval_fraction={EVAL_FRACTION}"]


@pytest.mark.slow
def test_each_phase_reads_its_own_data_under_one_schedule(straight, prepared_32, prepared_16):
    run_dir, output = straight
    records = _records(run_dir)
    assert "phase 1/2: steps 1-40 at seq_len 16, batch 16" in output
    assert "phase 2/2: steps 41-80 at seq_len 32, batch 8" in output
    # Each phase starts its own data at its beginning: the first batch of each folder, at that phase's batch size.
    for step, folder, batch in ((1, prepared_16, 16), (41, prepared_32, 8)):
        first = next(PretrainingData(folder, batch, seed=0))
        assert records[step]["batch_hash"] == batch_hash({"input_ids": first["input_ids"]})
    # One linear schedule over the 80 steps: no restart at the boundary.
    config = _config([*TINY, *_trained(prepared_16, prepared_32)])
    schedule = make_schedule(config.schedule, config.optimizer.learning_rate, 80)
    np.testing.assert_allclose([records[s]["learning_rate"] for s in range(1, 81)],
                               [float(schedule(s - 1)) for s in range(1, 81)], rtol=1e-5)  # computed in the step
    # The first phase's last step is saved and evaluated though it is no multiple of 15 or 25, each phase on its
    # own held-out shards.
    finished = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert finished == [15, 30, 40, 45, 60, 75, 80]
    assert sorted(s for s, r in records.items() if "eval_loss" in r) == [25, 40, 50, 75, 80]
    for folder, batch in ((prepared_16, 16), (prepared_32, 8)):
        assert f"2 batches of {batch} from {folder} (eval shards)" in output


@pytest.mark.slow
def test_a_damaged_checkpoint_in_the_second_phase_falls_back_to_the_first_phases_end(straight, prepared_32,
                                                                                     prepared_16, tmp_path):
    """The newest checkpoint of the second phase does not restore: the run resumes from the first phase's last
    step, starts the second phase's data from its beginning, and follows the uninterrupted run exactly."""
    run_dir = tmp_path / "damaged"
    shutil.copytree(straight[0], run_dir)
    for step in (60, 75, 80):
        shutil.rmtree(run_dir / "checkpoints" / str(step))
    for blob in (run_dir / "checkpoints" / "45" / "state").rglob("*"):  # truncated, as a full disk leaves it
        if blob.is_file() and blob.parent.name == "d":
            blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 3])
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(printed):
        assert main(_pretrain_args(run_dir, *_trained(prepared_16, prepared_32))) == 0
    assert "checkpoint 45" in printed.getvalue() and "resumed from step 40" in printed.getvalue()
    _assert_same_trajectory(straight[0], run_dir, 80)
    discarded = [json.loads(line)["step"] for line in (run_dir / "metrics.discarded.jsonl").read_text().splitlines()]
    assert min(discarded) == 41 and max(discarded) == 80  # recomputed, not read back


@pytest.mark.slow
def test_sigkill_inside_the_second_phase_then_resume_matches_the_uninterrupted_run(straight, prepared_32, prepared_16,
                                                                                   tmp_path):
    run_dir = tmp_path / "killed"
    command = [sys.executable, "-m", "electra_jax", *_pretrain_args(run_dir, *_trained(prepared_16, prepared_32))]
    victim = subprocess.Popen(command, env=ENV, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics, deadline, logged = run_dir / "metrics.jsonl", time.time() + 300, 0
    while time.time() < deadline and victim.poll() is None:
        logged = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        if logged >= 62:  # past the checkpoint at 60, perhaps mid-save of it
            break
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    assert victim.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert 62 <= logged < 80
    finished = sorted(int(p.name) for p in (run_dir / "checkpoints").iterdir() if p.name.isdigit())
    assert 40 < finished[-1] < 80  # inside the second phase
    resumed = subprocess.run(command, capture_output=True, text=True, env=ENV, cwd=REPO, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resumed from step {finished[-1]}" in resumed.stdout + resumed.stderr
    _assert_same_trajectory(straight[0], run_dir, 80)
    # The steps logged after the restored checkpoint were computed again: each is in metrics.jsonl once, the
    # first attempt's records in metrics.discarded.jsonl.
    logged_steps = [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert logged_steps == list(range(1, 81))
    discarded = [json.loads(line)["step"] for line in (run_dir / "metrics.discarded.jsonl").read_text().splitlines()]
    assert discarded and min(discarded) == finished[-1] + 1
