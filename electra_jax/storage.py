"""Files that a crash, a full disk or a second process never leave half-written: a whole file or nothing
(`write_atomic`), a whole folder or nothing (`staged_folder`), and one writer per run directory (`run_lock`).
"""
from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
from pathlib import Path

from electra_jax.config import ConfigError

LOCK_FILE = ".lock"  # in the run directory: who holds it (pid, host, command, since)
# Errors that say the disk or the permissions are at fault, not the program: reported in one line.
STORAGE_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT})


class RunDirInUse(ConfigError):
    """Another process holds the run directory's lock."""


def storage_problem(err: OSError, command: str) -> ConfigError:
    """An OSError from writing, as the one line the user sees."""
    where = f" {err.filename}" if err.filename else ""
    return ConfigError(f"{command}: cannot write{where}: {err.strerror or err}; give a writable location with free "
                       f"space")


def write_atomic(path: str | Path, data: str | bytes) -> None:
    """Write `path` through a temporary file beside it and a rename: readers see the old file or the new one."""
    path = Path(path)
    payload = data.encode("utf-8") if isinstance(data, str) else data
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, 0o644)  # mkstemp makes it private
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


def refuse_nonempty(out_dir: Path, command: str) -> None:
    """Checked before any work: an existing, non-empty output folder is never overwritten."""
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{command}: {out_dir} exists and is not empty; choose a new folder or remove it")


@contextlib.contextmanager
def staged_folder(out_dir: Path, command: str):
    """Yields an empty folder beside `out_dir` that becomes `out_dir` only if the block succeeds."""
    refuse_nonempty(out_dir, command)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        os.chmod(staging, 0o755)  # mkdtemp makes it private
        yield staging
        if out_dir.exists():
            out_dir.rmdir()  # empty: checked above
        os.replace(staging, out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _holder(path: Path) -> str:
    try:
        record = json.loads(path.read_text())
        return (f"pid {record['pid']} on host {record['host']} ({record['command']}, since "
                f"{record['since']})")
    except (OSError, ValueError, KeyError):  # the holder is between taking the lock and naming itself
        return "another process"


@contextlib.contextmanager
def run_lock(run_dir: Path, command: str):
    """Hold RUN_DIR/.lock for the block, or refuse in one line naming the holder.

    `flock` belongs to the open file: the kernel lets go when the holder exits, however it exits (kill -9
    included), so a dead owner never keeps a run directory. The file's text only names the holder."""
    path = Path(run_dir) / LOCK_FILE
    try:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as err:
        if err.errno in STORAGE_ERRNOS:
            raise storage_problem(err, command) from None
        raise
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunDirInUse(f"{command}: {run_dir} is in use by {_holder(path)}; wait for that run to finish or "
                              f"stop it, or use another --run-dir") from None
        since = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": since, "command": command}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, (json.dumps(record) + "\n").encode(), 0)
        yield
    finally:
        os.close(descriptor)  # releases the lock
