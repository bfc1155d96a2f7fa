"""Write a whole output folder or nothing: build it in a hidden sibling, rename it into place at the end."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path


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
