"""`electra-jax bench`: the report's fields on fake CPU devices for each phase of a length curriculum, and the
peak table's lookups."""
import json
import math

import pytest

from electra_jax.bench import table_peak
from electra_jax.cli import main
from tests.conftest import REPO, TINY


def test_peak_table_lookup():
    assert table_peak("TPU v3", "float32") == 61.5e12
    assert table_peak("TPU v5 lite", "bfloat16") == 197e12
    assert table_peak("NVIDIA H100 80GB HBM3", "bfloat16") == 989e12
    assert table_peak("NVIDIA H100 80GB HBM3", "float32") == 494.5e12
    assert table_peak("NVIDIA A100-SXM4-40GB", "bfloat16") == 312e12
    assert table_peak("cpu", "float32") is None


@pytest.mark.slow
def test_bench_reports_speed_and_utilisation_for_each_phase(tmp_path, capsys):
    """A length curriculum's phases, each at its own shape (a config without phases is one of them)."""
    out = tmp_path / "bench.jsonl"
    overrides = [*TINY, "mesh.data=-1", "model.vocab_size=300", "train.steps=30",
                 "train.phases=[{steps: 20, seq_len: 16, batch_size: 16}, {steps: 10, seq_len: 32, batch_size: 8}]"]
    assert main(["bench", "--config", str(REPO / "configs" / "electra_smoke.yaml"), "--steps", "3", "--warmup", "1",
                 "--json", str(out), *overrides]) == 0
    printed = capsys.readouterr().out
    assert "8 x cpu" in printed and "tokens/s" in printed and "fp32 matmul measured in this run" in printed
    assert "phase 1/2: steps 1-20 at seq_len 16, batch 16 (5,120 tokens)" in printed
    assert "phase 2/2: steps 21-30 at seq_len 32, batch 8 (2,560 tokens)" in printed
    first, second = [json.loads(line) for line in out.read_text().splitlines()]
    assert (first["seq_len"], first["batch"], second["seq_len"], second["batch"]) == (16, 16, 32, 8)
    for result, steps in ((first, 20), (second, 10)):
        assert result["devices"] == 8 and result["phase_steps"] == steps
        assert result["compile_s"] > 0 and result["step_s"] > 0 and math.isfinite(result["loss"])
        assert result["tokens_per_s"] == pytest.approx(result["batch"] * result["seq_len"] / result["step_s"])
        assert result["phase_tokens"] == steps * result["batch"] * result["seq_len"]
        assert result["phase_hours"] == pytest.approx(steps * result["step_s"] / 3600)
        assert 0 < result["mfu"] < 1 and result["peak_memory_gib"] > 0
    assert first["peak_tflops_per_s"] == second["peak_tflops_per_s"]  # the CPU's peak, measured once


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--warmup", "-1"]])
def test_bench_refuses_no_timed_steps_in_one_line(argv, capsys):
    assert main(["bench", "--config", str(REPO / "configs" / "electra_smoke.yaml"), *argv]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "--steps must be at least 1" in errors[0]
