import json
import subprocess
import sys

import pytest

from electra_jax.config import ConfigError, load_config, masking_warning
from electra_jax.validation import mesh_shape, validate

from tests.conftest import REPO

PRESETS = sorted(path.stem for path in (REPO / "configs").glob("*.yaml"))  # every file, ALBERT's included


def test_every_preset_is_named():
    assert {"electra_smoke", "electra_cpu", "electra_small", "albert_base", "albert_xlarge_v2",
            "distill_mbert"} <= set(PRESETS)


@pytest.mark.parametrize("name", PRESETS)
def test_presets_load_and_validate(name):
    from electra_jax.families import FAMILIES
    config = load_config(REPO / "configs" / f"{name}.yaml")
    validate(config)
    assert config.model.hidden_size % config.model.num_heads == 0
    assert config.model.architecture in FAMILIES


def test_distillation_presets():
    mbert = load_config(REPO / "configs" / "distill_mbert.yaml")
    k, o = mbert.distill, mbert.objective
    assert (k.student_layers, k.freeze_embeddings, k.hidden_weight, k.attention_weight, k.logit_weight) == (
        6, True, 1.0, 1.0, 0.0)
    assert (o.mask_token_prob, o.random_token_prob, mbert.optimizer.learning_rate) == (0.8, 0.1, 1e-4)
    smoke = load_config(REPO / "configs" / "distill_smoke.yaml")
    assert (smoke.train.steps, smoke.train.batch_size, smoke.data.seq_len) == (200, 16, 64)


def test_paper_dimensions():
    small = load_config(REPO / "configs" / "electra_small.yaml")
    m = small.model
    assert (m.num_layers, m.hidden_size, m.embedding_size, m.num_heads, m.intermediate_size) == (12, 256, 128, 4, 1024)
    assert (m.generator_hidden_size, m.generator_num_heads, m.generator_intermediate_size) == (64, 1, 256)
    assert small.optimizer.learning_rate == 5e-4 and small.train.batch_size == 128 and small.train.steps == 1_000_000
    assert load_config(REPO / "configs" / "electra_small_plus.yaml").model.generator_fraction == 1.0
    base = load_config(REPO / "configs" / "electra_base.yaml")
    assert base.model.generator_hidden_size == 256 and base.model.generator_num_heads == 4
    assert base.data.seq_len == 512 and base.optimizer.learning_rate == 2e-4
    large = load_config(REPO / "configs" / "electra_large.yaml")
    assert large.objective.mask_prob == 0.25 and large.model.num_layers == 24


def test_overrides_and_yaml_numbers():
    config = load_config(REPO / "configs" / "electra_smoke.yaml", ["train.steps=700", "optimizer.learning_rate=3e-3",
                                                                   "data.corpus=[a.txt, b.txt]"])
    assert config.train.steps == 700 and config.optimizer.learning_rate == 3e-3
    assert config.data.corpus == ("a.txt", "b.txt")


@pytest.mark.parametrize("overrides, field", [
    (["train.stpes=10"], "train.stpes"),
    (["nonsense.steps=10"], "nonsense"),
    (["train.steps=ten"], "train.steps"),
    (["train.steps=1.5"], "train.steps"),
    (["data.lowercase=maybe"], "data.lowercase"),
    (["model.num_heads=3"], "model.num_heads"),
    (["model.generator_fraction=0"], "model.generator_fraction"),
    (["model.dtype=float16"], "model.dtype"),
    (["train.grad_accum_steps=5"], "train.grad_accum_steps"),
    (["data.seq_len=1024"], "data.seq_len"),
    (["schedule.restarts=[200, 100]"], "schedule.restarts"),
    (["schedule.warmup_steps=2500"], "schedule.warmup_steps"),
    (["objective.max_predictions=100"], "objective.max_predictions"),
    (["optimizer.learning_rate=.nan"], "optimizer.learning_rate"),
    (["optimizer.learning_rate=nan"], "optimizer.learning_rate"),
    (["optimizer.weight_decay=.inf"], "optimizer.weight_decay"),
    (["objective.mask_prob=-inf"], "objective.mask_prob"),
])
def test_config_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as err:
        load_config(REPO / "configs" / "electra_smoke.yaml", overrides)
    message = str(err.value)
    assert field in message and "\n" not in message


def test_mesh_errors():
    config = load_config(REPO / "configs" / "electra_smoke.yaml", ["mesh.data=4", "mesh.fsdp=1"])
    with pytest.raises(ConfigError, match="does not match the 8 available devices"):
        validate(config, 8)
    config = load_config(REPO / "configs" / "electra_smoke.yaml", ["train.batch_size=12", "mesh.data=-1"])
    with pytest.raises(ConfigError, match="divisible by the data axes"):
        validate(config, 8)
    config = load_config(REPO / "configs" / "electra_smoke.yaml", ["mesh.data=-1", "mesh.tensor=4"])
    with pytest.raises(ConfigError, match="model.num_heads=2 is not divisible by mesh.tensor=4"):
        validate(config, 8)
    assert mesh_shape(load_config(None, ["mesh.data=-1", "mesh.fsdp=2"]), 8) == (4, 2, 1)


def test_cli_reports_config_error_in_one_line():
    result = subprocess.run([sys.executable, "-m", "electra_jax", "pretrain", "--config",
                             str(REPO / "configs" / "electra_smoke.yaml"), "train.stpes=3"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "train.stpes" in result.stderr


@pytest.mark.slow
def test_cpu_preset_is_the_documented_twenty_minute_run(tmp_path, tiny_corpus, capsys):
    from electra_jax.cli import main
    from tests.conftest import TINY
    cpu = load_config(REPO / "configs" / "electra_cpu.yaml")
    assert (cpu.data.seq_len, cpu.data.vocab_size, cpu.train.batch_size) == (128, 16000, 32)
    assert cpu.max_predictions == 19 and masking_warning(cpu) is None  # the full 15% at length 128
    assert cpu.model.max_position_embeddings == cpu.data.seq_len and 0 < cpu.train.eval_every < cpu.train.steps
    # It pretrains as written, with held-out evaluation, on a tiny corpus and model.
    assert main(["pretrain", "--config", str(REPO / "configs" / "electra_cpu.yaml"), "--run-dir", str(tmp_path / "run"),
                 "--no-progress", *TINY, "mesh.data=-1", f"data.corpus=[{tiny_corpus}]", "data.eval_fraction=0.1",
                 "train.steps=4", "train.eval_every=2", "train.eval_batches=1"]) == 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 4 and "eval_discriminator_auc" in rows[-1]
    assert "warning:" not in capsys.readouterr().out


def test_masking_budget_is_derived_as_the_original():
    # google-research/electra: max_predictions_per_seq = int((mask_prob + 0.005) * max_seq_length).
    small = load_config(REPO / "configs" / "electra_small.yaml")
    assert small.objective.max_predictions == 0 and small.max_predictions == 19
    assert load_config(REPO / "configs" / "electra_base.yaml").max_predictions == 79
    assert load_config(REPO / "configs" / "electra_large.yaml").max_predictions == 130  # 25% of 512
    smoke = load_config(REPO / "configs" / "electra_smoke.yaml", ["data.seq_len=128"])
    assert smoke.max_predictions == 19  # follows the sequence length it runs at
    assert load_config(REPO / "configs" / "electra_smoke.yaml", ["objective.max_predictions=7"]).max_predictions == 7
    with pytest.raises(ConfigError, match="objective.max_predictions must be >= 0"):
        load_config(None, ["objective.max_predictions=-1"])


def test_derived_budget_masks_fifteen_percent_of_full_sequences():
    import jax
    import jax.numpy as jnp
    from electra_jax.objectives.masking import mask_tokens
    config = load_config(REPO / "configs" / "electra_smoke.yaml", ["data.seq_len=128"])
    ids = jnp.full((64, 128), 7, jnp.int32).at[:, 0].set(2).at[:, 63].set(3).at[:, 127].set(3)
    masked = mask_tokens(jax.random.key(0), ids, ids == 7, mask_id=4, mask_prob=0.15, mask_token_prob=0.85,
                         max_predictions=config.max_predictions)
    assert float(masked.weights_BxP.sum(1).mean()) == round(125 * 0.15)  # of the 125 maskable tokens


def test_a_budget_below_the_masking_rate_warns_with_the_effective_rate():
    capped = load_config(REPO / "configs" / "electra_smoke.yaml", ["data.seq_len=128", "objective.max_predictions=10"])
    warning = masking_warning(capped)
    assert warning.count("\n") == 0 and "objective.max_predictions=10" in warning and "(7.8%)" in warning
    assert "objective.max_predictions=0" in warning and "(19)" in warning
    assert masking_warning(load_config(REPO / "configs" / "electra_smoke.yaml", ["data.seq_len=128"])) is None
    assert masking_warning(load_config(REPO / "configs" / "electra_smoke.yaml",
                                       ["data.seq_len=128", "objective.max_predictions=20"])) is None
    assert "(3.9%)" in masking_warning(load_config(REPO / "configs" / "albert_base.yaml"))  # ALBERT's own 20 of 512


def test_pretrain_prints_the_masking_warning_once(tmp_path, tiny_corpus):
    from electra_jax.run_dir import start_run
    from tests.conftest import TINY
    lines = []
    config = load_config(REPO / "configs" / "electra_smoke.yaml",
                         [*TINY, f"data.corpus=[{tiny_corpus}]", "objective.max_predictions=2"])
    start_run(config, tmp_path / "run", lines.append)
    assert [line for line in lines if line.startswith("warning:")] == [masking_warning(config)]


def test_config_names_the_registered_families():
    from electra_jax.config import ARCHITECTURES
    from electra_jax.families import FAMILIES
    assert ARCHITECTURES == tuple(FAMILIES)
