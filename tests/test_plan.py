"""`electra-jax plan`: per-device memory of a preset on a target, from the shards of the state and the residuals
JAX saves for the real loss; the accelerator presets fit a v3-8 at their stated batch."""
import dataclasses

import jax
import numpy as np
import pytest
from jax._src.ad_checkpoint import saved_residuals

from electra_jax.bench import synthetic_batch
from electra_jax.cli import main
from electra_jax.config import REMAT, load_config
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.families import family_of
from electra_jax.plan import GiB, TARGETS, candidates, for_target, plan
from electra_jax.state import build_model
from tests.conftest import REPO


def _last_line(capsys, *args) -> tuple[int, str]:
    status = main(["plan", *args])
    return status, capsys.readouterr().out.strip().splitlines()[-1]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["electra_base", "electra_large", "distill_mbert"])
def test_the_big_presets_fit_a_v3_8(capsys, preset):
    status, last = _last_line(capsys, "--config", str(REPO / f"configs/{preset}.yaml"), "--target", "v3-8")
    assert status == 0 and last.startswith("fits: yes, ") and last.endswith(" of 16.0 GiB per device"), last


def test_float32_without_remat_does_not_fit_and_says_so(capsys):
    status, last = _last_line(capsys, "--config", str(REPO / "configs/electra_base.yaml"), "--target", "v3-8",
                              "model.dtype=float32", "model.remat=none")
    assert status == 1 and last.startswith("fits: no, "), last


def jax_saved_residual_bytes(config, rows: int) -> int:
    """What jax.ad_checkpoint.print_saved_residuals lists for the family's loss on `rows` rows, less the
    loss's own arguments: counted apart from the plan's own jaxpr walk."""
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, batch_size=rows))
    model = build_model(config)
    objective = family_of(config.model).objective(config, model, SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4))
    batch = {k: jax.ShapeDtypeStruct(v.shape, v.dtype) for k, v in synthetic_batch(config, 30522).items()}
    keys = jax.random.split(jax.random.key(0), 4)
    whole, counts = jax.eval_shape(lambda b: objective.prepare((keys[0], keys[1]), b), batch)
    from electra_jax.plan import _init_params
    params = jax.eval_shape(lambda: _init_params(config, model))
    residuals = saved_residuals(lambda p, w, c: objective.loss(p, w, keys[2:], c)[0], params, whole, counts)
    return sum(int(np.prod(aval.shape)) * aval.dtype.itemsize for aval, source in residuals
               if not source.startswith("from the argument"))


@pytest.mark.slow
def test_the_activation_figure_is_what_jax_saves_for_the_loss():
    config = load_config(REPO / "configs/electra_base.yaml", ["model.vocab_size=30522"])
    found = plan(config, TARGETS["v3-8"])
    assert found.micro_rows == 256 // 8  # one device's rows, one micro-batch
    reference = jax_saved_residual_bytes(for_target(config, TARGETS["v3-8"]), found.micro_rows)
    print(f"plan {found.activations / GiB:.3f} GiB, jax's saved residuals {reference / GiB:.3f} GiB")
    assert abs(found.activations - reference) <= 0.10 * reference


@pytest.mark.slow
def test_fsdp_holds_an_eighth_of_the_state_per_device():
    config = load_config(REPO / "configs/electra_base.yaml", ["model.vocab_size=30522"])
    data = plan(config, TARGETS["v3-8"])
    fsdp = plan(dataclasses.replace(config, mesh=dataclasses.replace(config.mesh, data=1, fsdp=8)), TARGETS["v3-8"])
    assert fsdp.mesh == (1, 8, 1) and fsdp.micro_rows == data.micro_rows
    for part in ("parameters", "optimizer", "gradients"):
        share = getattr(fsdp, part) / getattr(data, part)
        assert 1 / 8 <= share < 0.13, (part, share)  # every tensor with an embed axis is split; biases are small


@pytest.mark.slow
def test_choose_takes_fewest_micro_batches_then_least_recomputation(capsys):
    config = load_config(REPO / "configs/electra_base.yaml")
    assert candidates(config, TARGETS["v3-8"])[:5] == [(1, r) for r in REMAT] + [(2, "none")]
    status = main(["plan", "--config", str(REPO / "configs/electra_base.yaml"), "--target", "v3-8", "--choose",
                   "model.remat=none"])
    out = capsys.readouterr().out
    assert status == 0 and "choose: model.remat=dots train.grad_accum_steps=1" in out, out
    assert "grad_accum_steps=1 remat=none" in out and "(too much)" in out


@pytest.mark.slow
def test_cudnn_attention_is_planned_as_an_upper_bound(capsys):
    status = main(["plan", "--config", str(REPO / "configs/electra_small.yaml"), "--target", "h100-80g",
                   "model.attention=cudnn", "model.attention_dropout_rate=0"])
    out = capsys.readouterr().out
    assert status == 0 and "attention cudnn (counted as jax: at most)" in out, out
