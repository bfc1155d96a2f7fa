"""`electra-jax bench`: the report's fields on fake CPU devices, and the peak table's lookups."""
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
def test_bench_reports_speed_and_utilisation(tmp_path, capsys):
    out = tmp_path / "bench.jsonl"
    overrides = [*TINY, "mesh.data=-1", "model.vocab_size=300"]
    assert main(["bench", "--config", str(REPO / "configs" / "electra_smoke.yaml"), "--steps", "3", "--warmup", "1",
                 "--json", str(out), *overrides]) == 0
    printed = capsys.readouterr().out
    assert "8 x cpu" in printed and "tokens/s" in printed and "fp32 matmul measured in this run" in printed
    result = json.loads(out.read_text())
    assert result["devices"] == 8 and result["batch"] == 16 and result["seq_len"] == 32
    assert result["compile_s"] > 0 and result["step_s"] > 0 and math.isfinite(result["loss"])
    assert result["tokens_per_s"] == pytest.approx(16 * 32 / result["step_s"])
    assert 0 < result["mfu"] < 1 and result["peak_memory_gib"] > 0


@pytest.mark.parametrize("argv", [["--steps", "0"], ["--warmup", "-1"]])
def test_bench_refuses_no_timed_steps_in_one_line(argv, capsys):
    assert main(["bench", "--config", str(REPO / "configs" / "electra_smoke.yaml"), *argv]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and "--steps must be at least 1" in errors[0]
