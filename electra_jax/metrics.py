"""Metric writers (JSONL + TensorBoard), the FLOPs of an encoder (each family counts its own step from it), and
the loss/accuracy plot."""
from __future__ import annotations

import json
import os
from pathlib import Path

from electra_jax.config import Config


DISCARDED = "metrics.discarded.jsonl"  # records of steps a resume went back over, oldest first


class MetricWriter:
    """Append-only JSONL (one object per logged step) plus TensorBoard event files.

    A run resumed from step S (after a crash, kill -9 or a damaged newer checkpoint) computes the steps after
    S again; their earlier records move to metrics.discarded.jsonl so metrics.jsonl holds each step once, and
    TensorBoard is told to purge its events from step S+1 (its purge_step convention)."""

    def __init__(self, run_dir: str | Path, enabled: bool = True, resume_step: int = 0):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter
            purged = _discard_after(self.path, resume_step)
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"),
                                     purge_step=resume_step + 1 if purged else None)
            self._file = open(self.path, "a", encoding="utf-8")

    def write(self, step: int, values: dict[str, float | str]) -> None:
        if not self.enabled:
            return
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        for name, value in values.items():
            if isinstance(value, (int, float)):  # not the batch digest
                self._tb.add_scalar(name, value, step)

    def close(self) -> None:
        if self.enabled:
            self._file.close()
            self._tb.close()


def _discard_after(path: Path, step: int) -> bool:
    """Move the records of steps after `step` to metrics.discarded.jsonl and drop a half-written last line
    (a run killed mid-write); True if any record moved. metrics.jsonl is replaced atomically."""
    if not path.is_file():
        return False
    from electra_jax.storage import write_atomic
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    kept, later = [], []
    for line in lines:
        try:
            (later if json.loads(line)["step"] > step else kept).append(line)
        except (ValueError, KeyError, TypeError):
            later.append(line)  # not a record: kept aside, not lost
    if later:
        with open(path.parent / DISCARDED, "a", encoding="utf-8") as handle:
            handle.writelines(later)
    if later or (text and not text.endswith("\n")):
        write_atomic(path, "".join(kept))
    return bool(later)


def read_metrics(path: str | Path) -> list[dict]:
    """Logged records; where a resumed run logged a step again, the last record wins. A half-written last
    line (a killed run) is left out."""
    by_step: dict[int, dict] = {}
    text = Path(path).read_text()
    lines = text.splitlines()
    if lines and not text.endswith("\n"):
        lines.pop()
    for line in lines:
        if line.strip():
            record = json.loads(line)
            by_step[record["step"]] = record
    return [by_step[s] for s in sorted(by_step)]


def encoder_flops_per_token(layers: int, hidden: int, intermediate: int, seq_len: int) -> float:
    """Forward matmul FLOPs per token of a BERT encoder (2 per multiply-add)."""
    dense = 4 * hidden * hidden + 2 * hidden * intermediate
    attention = 2 * seq_len * hidden  # scores and context
    return 2.0 * layers * (dense + attention)


def distill_flops_per_token(config: Config, teacher_layers: int) -> float:
    """Matmul FLOPs per input token of one distillation step: the teacher's forward pass, the student's forward
    and backward (3x forward); the MLM heads at the masked positions when a logit or MLM term needs them."""
    m, k, seq_len = config.model, config.distill, config.data.seq_len
    teacher = encoder_flops_per_token(teacher_layers, m.hidden_size, m.intermediate_size, seq_len)
    student = encoder_flops_per_token(k.student_layers, m.hidden_size, m.intermediate_size, seq_len)
    if k.logit_weight or k.mlm_weight:
        head = config.max_predictions / seq_len * (2 * m.hidden_size ** 2 + 2 * m.hidden_size * m.vocab_size)
        teacher, student = teacher + head, student + head
    return teacher + 3.0 * student


def _series(records: list[dict], name: str) -> tuple[list[int], list[float]]:
    """(steps, values) of the records that logged `name`."""
    kept = [r for r in records if name in r]
    return [r["step"] for r in kept], [r[name] for r in kept]


def plot_metrics(metrics_path: str | Path, out_path: str | Path) -> Path | None:
    records = read_metrics(metrics_path)
    if not records:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("loss", ["generator_loss", "discriminator_loss", "mlm_loss", "sop_loss", "hidden_loss",
                        "attention_loss", "logit_loss"]),
              ("accuracy / F1", ["generator_accuracy", "discriminator_accuracy", "replaced_f1", "mlm_accuracy",
                                 "sop_accuracy", "discriminator_auc"])]
    logged = set().union(*records)
    # Only the panels this run has data for (a distillation without MLM has no accuracy); held-out values
    # (eval_*, logged every train.eval_every steps) are dashed, in their training curve's colour.
    panels = [(title, [n for n in names if n in logged or f"eval_{n}" in logged]) for title, names in panels]
    panels = [(title, names) for title, names in panels if names] or [("loss", ["loss"])]
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
    for axis, (title, names) in zip(axes[0], panels):
        for name in names:
            colour = None
            if name in logged:
                line, = axis.plot(*_series(records, name), label=name)
                colour = line.get_color()
            if f"eval_{name}" in logged:
                axis.plot(*_series(records, f"eval_{name}"), "--o", markersize=3, color=colour,
                          label=f"{name} (held out)")
        axis.set_title(title)
        axis.set_xlabel("step")
        axis.legend(fontsize=8)
        axis.grid(alpha=0.3)
    fig.tight_layout()
    out_path = Path(out_path)
    partial = out_path.with_name(f".{out_path.name}.partial.png")
    fig.savefig(partial, dpi=100)
    plt.close(fig)
    os.replace(partial, out_path)  # a reader never sees half a picture
    return out_path
