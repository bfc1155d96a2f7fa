"""Metric writers (JSONL + TensorBoard), the FLOPs of an encoder (each family counts its own step from it), and
the loss/accuracy plot."""
from __future__ import annotations

import json
from pathlib import Path

from electra_jax.config import Config


class MetricWriter:
    """Append-only JSONL (one object per logged step) plus TensorBoard event files."""

    def __init__(self, run_dir: str | Path, enabled: bool = True):
        self.enabled = enabled
        self.path = Path(run_dir) / "metrics.jsonl"
        self._tb = None
        if enabled:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(str(Path(run_dir) / "tensorboard"))
            _drop_partial_last_line(self.path)
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


def _drop_partial_last_line(path: Path) -> None:
    """A run killed mid-write leaves half a record; its step is recomputed after resume, so drop it rather
    than glue the next record onto it."""
    if not path.is_file():
        return
    with open(path, "rb+") as handle:
        data = handle.read()
        if data and not data.endswith(b"\n"):
            handle.truncate(data.rfind(b"\n") + 1)


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
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return Path(out_path)
