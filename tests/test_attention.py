"""model.attention: cuDNN flash attention lowers for CUDA and is refused in one line where it cannot run; the
padding it sees as key lengths masks exactly what our additive bias masks."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax._src.cudnn import fused_attention_stablehlo

from electra_jax.bench import synthetic_batch
from electra_jax.config import ConfigError, load_config
from electra_jax.data.text_tokenizer import SpecialIds
from electra_jax.mesh import make_mesh
from electra_jax.models.layers import attention_bias, key_lengths
from electra_jax.train import setup_training
from tests.conftest import TINY

SPECIALS = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
CUDNN = TINY + ["model.attention=cudnn", "model.attention_dropout_rate=0", "model.vocab_size=300"]


def _training(overrides, platform):
    config = load_config(None, overrides)
    return config, setup_training(config, make_mesh(config, jax.devices()[:1]), SPECIALS, platform=platform)


def test_cudnn_train_step_lowers_for_cuda(monkeypatch):
    # JAX asks the installed cuDNN for its version while tracing and refuses without one ("cuDNN is not
    # detected"); a CUDA 12 cuDNN 9.1 answer stands in for that probe alone, so the step lowers here.
    monkeypatch.setattr(fused_attention_stablehlo, "check_cudnn_version", lambda: 90100)
    config, training = _training(CUDNN, "cuda")
    assert training.config.model.dtype == "bfloat16"  # auto, resolved for the GPU
    batch = {name: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=training.batch_sharding)
             for name, array in synthetic_batch(config, 300).items()}
    # cuDNN's custom calls carry no export compatibility guarantee; the module is read here, never stored.
    unguaranteed = [jax.export.DisabledSafetyCheck.custom_call(f"__cudnn$fmhaSoftmax{part}") for part in ("", "Backward")]
    module = jax.export.export(training.step_fn, platforms=["cuda"], disabled_checks=unguaranteed)(
        training.abstract_state, batch).mlir_module()
    layers = config.model.num_layers * 2  # the generator's and the discriminator's
    assert module.count("stablehlo.custom_call @__cudnn$fmhaSoftmax(") == layers  # forward
    assert module.count("stablehlo.custom_call @__cudnn$fmhaSoftmaxBackward(") == layers


@pytest.mark.parametrize("extra, platform, message", [
    ([], "cpu", "runs on NVIDIA GPUs only, and this step is compiled for cpu"),
    ([], "tpu", "runs on NVIDIA GPUs only, and this step is compiled for tpu"),
    (["model.dtype=float32"], "cuda", "model.attention=cudnn (cuDNN flash attention) runs in bfloat16 only"),
])
def test_cudnn_is_refused_where_it_cannot_run(extra, platform, message):
    with pytest.raises(ConfigError, match=r"^config: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        _training(CUDNN + extra, platform)


def test_cudnn_is_refused_with_attention_dropout():
    with pytest.raises(ConfigError, match="has no attention dropout; set model.attention_dropout_rate=0"):
        load_config(None, TINY + ["model.attention=cudnn", "model.attention_dropout_rate=0.1"])


def test_key_lengths_mask_what_the_bias_masks():
    """The padding as key lengths (cuDNN's form) and as our additive bias give the same attention at every
    real query (here through XLA's implementation, which takes both forms)."""
    rng = np.random.default_rng(0)
    mask_BxL = (np.arange(16)[None] < np.array([16, 9, 1])[:, None]).astype(np.int32)
    bias = attention_bias(jnp.asarray(mask_BxL))
    assert key_lengths(bias).tolist() == [16, 9, 1]
    q, k, v = (jnp.asarray(rng.standard_normal((3, 16, 2, 8)), jnp.float32) for _ in range(3))
    by_bias = jax.nn.dot_product_attention(q, k, v, bias=bias)
    by_lengths = jax.nn.dot_product_attention(q, k, v, key_value_seq_lengths=key_lengths(bias))
    real = mask_BxL.astype(bool)
    np.testing.assert_allclose(np.asarray(by_lengths)[real], np.asarray(by_bias)[real], atol=1e-6)


SPLASH = TINY + ["model.attention=splash", "model.attention_dropout_rate=0", "model.vocab_size=300",
                 "model.hidden_size=128", "model.embedding_size=128", "model.generator_fraction=1.0",
                 "model.max_position_embeddings=128", "data.seq_len=128", "mesh.data=8"]


def test_splash_train_step_lowers_for_tpu_on_each_device_rows():
    """The step for a v4-8-like mesh of 8 devices, exported for TPU: the splash kernels (Mosaic custom calls)
    run inside shard_map on each device's rows."""
    config = load_config(None, SPLASH)
    training = setup_training(config, make_mesh(config), SPECIALS, platform="tpu")
    batch = {name: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=training.batch_sharding)
             for name, array in synthetic_batch(config, 300).items()}
    module = jax.export.export(training.step_fn, platforms=["tpu"])(training.abstract_state, batch).mlir_module()
    assert module.count("stablehlo.custom_call @tpu_custom_call") >= 3  # the forward, dq and dk/dv kernels
    assert "sdy.manual_computation" in module or "SPMDFullToShardShape" in module  # shard_map's region


def test_splash_attends_real_keys_as_our_bias_does():
    """Through Pallas' interpreter on this CPU: the kernel's attention at every real query equals softmax(q k^T
    / sqrt(D) + our padding bias) v."""
    from electra_jax.models.splash import splash_attention
    rng = np.random.default_rng(0)
    mask_BxL = (np.arange(128)[None] < np.array([128, 70])[:, None]).astype(np.int32)
    bias = attention_bias(jnp.asarray(mask_BxL))
    q, k, v = (jnp.asarray(rng.standard_normal((2, 2, 128, 64)), jnp.float32) for _ in range(3))
    ours = jax.nn.softmax(jnp.einsum("bnqd,bnkd->bnqk", q, k) / 8.0 + bias, axis=-1) @ v
    splash = splash_attention(q, k, v, bias, interpret=True)
    real = np.broadcast_to(mask_BxL[:, None, :], (2, 2, 128)).astype(bool)
    np.testing.assert_allclose(np.asarray(splash)[real], np.asarray(ours)[real], atol=2e-5)


@pytest.mark.parametrize("extra, platform, device_kind, message", [
    ([], "cpu", "", "runs on TPU v4 and later only, and this step is compiled for cpu"),
    ([], "tpu", "TPU v3", "runs on TPU v4 and later only, and this step is compiled for TPU v3"),
    (["data.seq_len=96"], "tpu", "", "data.seq_len=96 is no multiple of 128"),
])
def test_splash_is_refused_where_it_cannot_run(extra, platform, device_kind, message):
    from electra_jax.precision import for_platform
    from electra_jax.validation import validate_platform
    with pytest.raises(ConfigError, match=message):
        validate_platform(for_platform(load_config(None, SPLASH + extra), platform), platform, device_kind)
