"""storage.py: one writer per run directory (two real processes), whole files or nothing, and a read-only run
directory reported in one line."""
import os
import shutil
import subprocess
import sys
import textwrap
import time

import pytest

from electra_jax.storage import RunDirInUse, run_lock, write_atomic
from tests.conftest import REPO, TINY

ENV = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}

HOLD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from electra_jax.storage import run_lock
    with run_lock(Path(sys.argv[1]), "pretrain"):
        print("locked", flush=True)
        time.sleep(120)
""")


def _pretrain(run_dir, *overrides):
    return subprocess.run([sys.executable, "-m", "electra_jax", "pretrain", "--config",
                           str(REPO / "configs" / "electra_smoke.yaml"), "--run-dir", str(run_dir), "--no-progress",
                           *TINY, *overrides], capture_output=True, text=True, env=ENV, timeout=300, cwd=REPO)


def test_a_second_trainer_is_refused_naming_the_holder_and_a_dead_holder_keeps_nothing(tmp_path):
    run_dir = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True,
                              env=ENV, cwd=REPO)
    try:
        assert holder.stdout.readline().strip() == "locked"
        started = time.perf_counter()
        second = _pretrain(run_dir, "train.steps=4")
        assert second.returncode == 2, second.stderr
        errors = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(errors) == 1 and f"is in use by pid {holder.pid} on host" in errors[0], second.stderr
        assert time.perf_counter() - started < 60  # refused before any data work or compile
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock"]  # nothing written
    finally:
        holder.kill()  # kill -9: the kernel drops the lock with the process
        holder.wait()
    with run_lock(run_dir, "pretrain"):
        pass


def test_the_lock_is_exclusive_within_a_process_too(tmp_path):
    with run_lock(tmp_path, "pretrain"):
        with pytest.raises(RunDirInUse, match=f"in use by pid {os.getpid()}"):
            with run_lock(tmp_path, "distill"):
                pass


def test_write_atomic_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "config.yaml"
    write_atomic(path, "old: 1\n")

    def fail(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", fail)
    with pytest.raises(OSError):
        write_atomic(path, "new: 2\n")
    assert path.read_text() == "old: 1\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]  # no temporary left


@pytest.mark.slow
def test_a_read_only_run_directory_is_one_line(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    command = [sys.executable, "-m", "electra_jax", "pretrain", "--config", str(REPO / "configs" / "electra_smoke.yaml"),
               "--run-dir", str(run_dir), "--no-progress", *TINY]
    if os.geteuid() == 0:  # root writes through permissions: make it a read-only mount, in a private namespace
        if not shutil.which("unshare"):
            pytest.skip("running as root without unshare(1): no way to make a read-only folder")
        command = ["unshare", "-m", "sh", "-c", f'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && '
                                                f'exec "$@"', str(run_dir), *command]
    else:
        run_dir.chmod(0o555)
    result = subprocess.run(command, capture_output=True, text=True, env=ENV, timeout=300, cwd=REPO)
    if "mount:" in result.stderr or "unshare:" in result.stderr:
        pytest.skip(f"cannot make a read-only mount here: {result.stderr.strip()[:200]}")
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and "cannot write" in errors[0], result.stderr
    assert "Read-only file system" in errors[0] or "Permission denied" in errors[0], result.stderr
