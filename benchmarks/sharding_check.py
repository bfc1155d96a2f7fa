"""What the compiled train step does per device on 8 fake CPU devices: a v3-8's mesh, checked on this CPU.

    python benchmarks/sharding_check.py [--config configs/electra_small.yaml] [--layers 12]

For data parallelism, data parallelism with 4 micro-batches, and FSDP over 8: the rows of every attention
tensor per device (batch / devices / micro-batches when nothing is gathered), the collectives XLA placed,
and the temporaries and arguments per device from the compiled step's memory analysis. float32 compute,
as the CPU compiles it (the shapes and collectives do not depend on the dtype). About 30 s per layout for
12 layers.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
from pathlib import Path

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")
REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

LAYOUTS = (("data parallel", ["mesh.data=8"]),
           ("data parallel, 4 micro-batches", ["mesh.data=8", "train.grad_accum_steps=4"]),
           ("fsdp 8", ["mesh.data=1", "mesh.fsdp=8"]))
COLLECTIVES = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "electra_small.yaml"))
    parser.add_argument("--layers", type=int, help="model.num_layers (default: the preset's)")
    args = parser.parse_args()
    import jax

    from electra_jax.bench import synthetic_batch
    from electra_jax.config import load_config
    from electra_jax.data.text_tokenizer import SpecialIds
    from electra_jax.mesh import make_mesh
    from electra_jax.train import setup_training

    print(f"{args.config} on {jax.device_count()} fake CPU devices, jax {jax.__version__}")
    for name, overrides in LAYOUTS:
        extra = [f"model.num_layers={args.layers}"] if args.layers else []
        config = load_config(args.config, ["model.dtype=float32", *extra, *overrides])
        vocab = config.model.vocab_size or config.data.vocab_size  # a preset's comes from its tokenizer
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=vocab))
        training = setup_training(config, make_mesh(config), SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4))
        batch = {key: jax.ShapeDtypeStruct(array.shape, array.dtype, sharding=training.batch_sharding)
                 for key, array in synthetic_batch(config, vocab).items()}
        started = time.perf_counter()
        compiled = training.step_fn.lower(training.abstract_state, batch).compile()
        seconds = time.perf_counter() - started
        hlo, memory = compiled.as_text(), compiled.memory_analysis()
        heads, length = config.model.num_heads, config.data.seq_len
        rows = sorted({int(r) for r in re.findall(rf"f32\[(\d+),{heads},{length},{length}\]", hlo)})
        counts = ", ".join(f"{c} {hlo.count(c + '(') + hlo.count(c + '-start(')}" for c in COLLECTIVES)
        print(f"{name:32s} attention rows per device {rows}; {counts}; temporaries "
              f"{memory.temp_size_in_bytes / 2 ** 30:.2f} GiB, arguments {memory.argument_size_in_bytes / 2 ** 30:.3f}"
              f" GiB per device (compiled in {seconds:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
