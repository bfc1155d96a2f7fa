"""Multi-process pretraining through JAX's own runtime: 2 CPU processes x 2 devices step for step equal to
1 process x 4 devices (loss to 1e-5), then a resume from the checkpoint the two processes wrote."""
import pytest
import os
import socket
import subprocess
import sys

import numpy as np

from tests.conftest import REPO, TINY
from tests.test_cli_pretrain import _losses

pytestmark = pytest.mark.slow  # trains end to end (make test-fast leaves it out)

COMMON = ("mesh.data=4", "train.steps=10", "checkpoint.every_steps=5")


def _env(devices: int) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    return {**env, "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}", "JAX_PLATFORMS": "cpu"}


def _command(run_dir, prepared_dir, *extra):
    return [sys.executable, "-m", "electra_jax", "pretrain", "--config", str(REPO / "configs" / "electra_smoke.yaml"),
            "--run-dir", str(run_dir), "--no-progress", *extra, *TINY, *COMMON, f"data.prepared={prepared_dir}"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _two_processes(run_dir, prepared_dir, *overrides):
    port = _free_port()
    processes = [subprocess.Popen(_command(run_dir, prepared_dir, "--coordinator", f"127.0.0.1:{port}",
                                           "--num-processes", "2", "--process-id", str(i), *overrides),
                                  env=_env(2), cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (out, err) in zip(processes, outputs):
        assert p.returncode == 0, err[-3000:]
    return outputs


def test_two_processes_match_one_and_resume(tmp_path, prepared):
    single = subprocess.run(_command(tmp_path / "single", prepared), env=_env(4), cwd=REPO, capture_output=True,
                            text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-3000:]
    _two_processes(tmp_path / "multi", prepared, "train.stop_after=5")
    assert sorted(int(p.name) for p in (tmp_path / "multi" / "checkpoints").iterdir() if p.name.isdigit()) == [5]
    (first_out, first_err), (second_out, _) = _two_processes(tmp_path / "multi", prepared)
    assert "resumed from step 5" in first_out + first_err and "checkpoints:" in first_out
    assert "resumed" not in second_out and "checkpoints:" not in second_out  # process 0 speaks alone
    a, b = _losses(tmp_path / "single"), _losses(tmp_path / "multi")
    assert sorted(a) == sorted(b) == list(range(1, 11))
    np.testing.assert_allclose([b[s] for s in range(1, 11)], [a[s] for s in range(1, 11)], rtol=0, atol=1e-5)
