"""`electra-jax export RUN_DIR OUT_DIR`: a run's checkpoint as Hugging Face PyTorch model files (no torch
needed), written by the run's family (`hf/electra.py`: discriminator/ and generator/; `hf/albert.py`,
`hf/bert.py`: one model) into a temporary sibling folder that is renamed to OUT_DIR only once complete.
"""
from __future__ import annotations

import json
from pathlib import Path

from electra_jax.storage import refuse_nonempty, staged_folder


def last_metrics(run_dir: Path, step: int) -> dict:
    """The last metrics record logged at or before `step` (for the model card)."""
    path, last = run_dir / "metrics.jsonl", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            row = json.loads(line)
            if row.get("step", 0) <= step:
                last = row
    return last


def export(source: str | Path, out_dir: str | Path, step: int | None = None, log=print) -> Path:
    from electra_jax.families import family_of
    from electra_jax.run_dir import load_run_params, locate_checkpoint
    out_dir = Path(out_dir)
    refuse_nonempty(out_dir, "export")
    run_dir, step = locate_checkpoint(source, step)
    config, params, step = load_run_params(run_dir, step)
    with staged_folder(out_dir, "export") as staging:
        written = family_of(config.model).hf.export(config, params, run_dir, step, last_metrics(run_dir, step),
                                                    staging)
    log(f"exported step {step} of {run_dir} to {out_dir}: {written}")
    return out_dir
