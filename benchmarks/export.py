"""Time `electra-jax export` of an ELECTRA-base-sized run (L12 H768, generator 1/3, vocab 30522).

Builds a run directory holding one checkpoint of randomly initialised base-sized parameters (with their
AdamW state, as a real run has), then times the whole export: restoring the parameters, writing both
safetensors files, configs, tokenizer files and model cards.

    python benchmarks/export.py [--out /tmp/electra-export-bench]
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402


def build_run(run_dir: Path) -> int:
    import jax

    from electra_jax.checkpoint import Checkpointer
    from electra_jax.config import load_config, save_config
    from electra_jax.data.tokenizer import SPECIAL_TOKENS, save_tokenizer, wordpiece_from_vocab
    from electra_jax.mesh import make_mesh
    from electra_jax.data.text_tokenizer import SpecialIds
    from electra_jax.train import setup_training

    repo = Path(__file__).resolve().parents[1]
    config = load_config(repo / "configs" / "electra_base.yaml", ["model.vocab_size=30522", "mesh.data=1"])
    tokens = [*SPECIAL_TOKENS, *(f"w{i}" for i in range(30522 - len(SPECIAL_TOKENS)))]
    save_tokenizer(wordpiece_from_vocab({t: i for i, t in enumerate(tokens)}, lowercase=False, strip_accents=False),
                   run_dir / "tokenizer")
    save_config(config, run_dir / "config.yaml")
    training = setup_training(config, make_mesh(config, jax.devices()[:1]), SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4))
    state = training.init()
    checkpointer = Checkpointer(run_dir / "checkpoints", config.checkpoint)
    checkpointer.save(1000, state)
    checkpointer.close()
    return sum(x.size for x in jax.tree.leaves(state.params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="/tmp/electra-export-bench")
    args = parser.parse_args()
    root = Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    num_params = build_run(root / "run")
    from electra_jax.hf.export import export
    start = time.perf_counter()
    export(root / "run", root / "hf", log=lambda *_: None)
    seconds = time.perf_counter() - start
    written = sum(f.stat().st_size for f in (root / "hf").rglob("*") if f.is_file())
    print(machine.describe())
    print(f"ELECTRA-base-sized run: {num_params / 1e6:.1f}M parameters (generator + discriminator), "
          f"{os.cpu_count()} CPU cores")
    print(f"export: {seconds:.2f} s wall clock, {written / 1e6:.0f} MB written (target: under 10 s)")
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
