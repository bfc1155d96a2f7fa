"""The accelerator check: one command that says what a GPU (or, without one, this CPU) does with our steps.

    python benchmarks/accelerator_check.py [--json FILE] [--loss-steps 200]

Prints the device, then for each preset of the platform (GPU: electra_small at its 128 x 128 batch and
electra_base at 64 x 512 with its preset remat, as one GPU of `launch/gpu.sh --gpus 4` runs it; CPU:
electra_smoke and electra_cpu), in the platform's default precision (bf16 on a GPU): compile time, step
time, tokens/s, MFU against the device's peak and peak memory (`electra-jax bench`), the same step in HF
PyTorch on the same device (bf16 autocast on a GPU) and the tokens/s ratio; on a GPU, cuDNN flash attention
against XLA's (`model.attention=cudnn` and `jax`, both without attention dropout); and the smoke model
trained for --loss-steps steps in bfloat16 and in float32 on the same batches, with their losses. Sized to
finish within 8 minutes on one H100.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

# (preset, overrides) per platform; each runs at its own batch.
PRESETS = {
    "gpu": [("electra_small", []), ("electra_base", ["train.batch_size=64"])],
    "cpu": [("electra_smoke", []), ("electra_cpu", ["train.batch_size=16"])],
}


def config_of(preset: str, overrides: list[str]):
    from electra_jax.config import load_config
    return load_config(REPO / "configs" / f"{preset}.yaml",
                       ["mesh.data=1", "model.vocab_size=0", "train.eval_every=0", *overrides])


def ours(config, steps: int) -> dict:
    from electra_jax.bench import bench
    return bench(config, steps=steps, warmup=2, log=lambda _: None)


def hf_pytorch(config, platform: str, steps: int) -> float:
    """Median seconds of the same ELECTRA step in HF PyTorch on this device (bf16 autocast on a GPU)."""
    import torch
    from train_step import median_step_seconds, synthetic_batch, torch_step
    vocab = config.model.vocab_size or config.data.vocab_size
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=vocab),
                                 objective=dataclasses.replace(config.objective, max_predictions=config.max_predictions))
    ids, segments = synthetic_batch(config.train.batch_size, config.data.seq_len, vocab)
    device = "cuda" if platform == "gpu" else "cpu"
    step = torch_step(config, ids, segments, device=device, autocast=platform == "gpu")
    seconds = median_step_seconds(step, steps)
    if device == "cuda":
        torch.cuda.empty_cache()
    return seconds


def losses_by_dtype(steps: int) -> dict[str, list[float]]:
    """The smoke model on the same `steps` batches of the embedded corpus, in each compute dtype."""
    import jax

    from electra_jax.config import load_config
    from electra_jax.data.default_corpus import write_default_corpus
    from electra_jax.data.loader import PretrainingData
    from electra_jax.mesh import make_mesh
    from electra_jax.run_dir import prepare_data, special_ids
    from electra_jax.train import setup_training
    with tempfile.TemporaryDirectory() as folder:
        corpus = write_default_corpus(Path(folder) / "corpus.txt", num_documents=600)
        config = load_config(REPO / "configs" / "electra_smoke.yaml", [
            f"data.corpus=[{corpus}]", f"train.steps={steps}", "schedule.warmup_steps=20", "mesh.data=1"])
        config, (data,), metadata = prepare_data(config, Path(folder) / "run", log=lambda _: None)
        losses = {}
        for dtype in ("bfloat16", "float32"):
            c = dataclasses.replace(config, model=dataclasses.replace(config.model, dtype=dtype))
            training = setup_training(c, make_mesh(c, jax.devices()[:1]), special_ids(metadata))
            loader, state, values = PretrainingData(data, c.train.batch_size, seed=0), training.init(), []
            for _ in range(steps):
                state, metrics = training.step_fn(state, next(loader))
                values.append(metrics["loss"])
            losses[dtype] = [float(v) for v in jax.device_get(values)]
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", help="also write every figure to this file")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per measurement")
    parser.add_argument("--loss-steps", type=int, default=200)
    args = parser.parse_args()
    import jax
    started = time.perf_counter()
    device = jax.devices()[0]
    platform = "gpu" if device.platform == "gpu" else "cpu"
    print(f"device: {len(jax.devices())} x {device.device_kind} ({device.platform}); jax {jax.__version__}", flush=True)
    report: dict = {"device": device.device_kind, "platform": device.platform, "presets": {}}
    for preset, overrides in PRESETS[platform]:
        config = config_of(preset, overrides)
        result = ours(config, args.steps)
        torch_seconds = hf_pytorch(config, platform, args.steps)
        result["hf_pytorch_step_s"] = torch_seconds
        result["ratio_vs_hf_pytorch"] = torch_seconds / result["step_s"]
        mfu = f"{100 * result['mfu']:.1f}%" if result["mfu"] else "n/a"
        print(f"{preset} ({result['batch']} x {result['seq_len']}, {result['dtype']}, remat {result['remat']}): "
              f"compile {result['compile_s']:.1f} s, step {1000 * result['step_s']:.1f} ms, "
              f"{result['tokens_per_s']:,.0f} tokens/s, MFU {mfu} of {result['peak_tflops_per_s']:.1f} TFLOP/s, "
              f"peak memory {result['peak_memory_gib']:.2f} GiB; HF PyTorch {1000 * torch_seconds:.1f} ms "
              f"-> {result['ratio_vs_hf_pytorch']:.2f}x", flush=True)
        if platform == "gpu":
            for attention in ("cudnn", "jax"):
                variant = config_of(preset, [*overrides, f"model.attention={attention}",
                                             "model.attention_dropout_rate=0"])
                timed = ours(variant, args.steps)
                result[f"attention_{attention}_step_s"] = timed["step_s"]
                print(f"  model.attention={attention}: step {1000 * timed['step_s']:.1f} ms, "
                      f"{timed['tokens_per_s']:,.0f} tokens/s", flush=True)
        report["presets"][preset] = result
    losses = losses_by_dtype(args.loss_steps)
    report["losses"] = losses
    for dtype, values in losses.items():
        print(f"smoke model, {args.loss_steps} steps in {dtype}: loss {values[0]:.3f} -> {values[-1]:.3f}, "
              f"mean of the last 50 {np.mean(values[-50:]):.3f}", flush=True)
    bf16, f32 = np.array(losses["bfloat16"]), np.array(losses["float32"])
    print(f"bf16 against float32: last-50 means {abs(bf16[-50:].mean() / f32[-50:].mean() - 1):.2%} apart, "
          f"largest one-step gap {np.max(np.abs(bf16 - f32) / f32):.2%}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=float))


if __name__ == "__main__":
    main()
