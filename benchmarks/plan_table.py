"""The memory plan of every accelerator preset on every target, as a Markdown table for docs/tpu_gpu.md.

    python benchmarks/plan_table.py [--presets electra_small,electra_base] [--targets v3-8,h100-80g]

Each cell is `electra-jax plan --config configs/PRESET.yaml --target TARGET` at the preset's own settings
(batch, model.remat, train.grad_accum_steps): the GiB one device holds, and whether that fits with the 15%
headroom. Traced on this CPU, nothing is run: about 5 s a cell for 12 layers, 10 s for 24.
"""
from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

PRESETS = ("electra_small", "electra_small_plus", "electra_medium", "electra_base", "electra_large", "albert_base",
           "albert_large", "albert_xlarge", "albert_base_v2", "albert_large_v2", "albert_xlarge_v2", "distill_mbert")


def main() -> None:
    from electra_jax.config import ConfigError, load_config
    from electra_jax.plan import GiB, TARGETS, plan

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=",".join(PRESETS))
    parser.add_argument("--targets", default=",".join(TARGETS))
    args = parser.parse_args()
    targets = [TARGETS[name] for name in args.targets.split(",")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    print(f"`python benchmarks/plan_table.py`, {datetime.date.today()}, commit {commit.strip()}: GiB per device "
          f"at each preset's own batch, remat and accumulation; **bold** fits with 15% headroom.\n")
    print("| preset (batch x seq, remat, accum) | " + " | ".join(f"{t.name} ({t.memory_gib:.0f} GiB)" for t in targets)
          + " |")
    print("|---|" + "---|" * len(targets))
    for name in args.presets.split(","):
        config = load_config(REPO / "configs" / f"{name}.yaml")
        t, m = config.train, config.model
        cells = []
        for target in targets:
            try:
                found = plan(config, target)
            except ConfigError as err:  # e.g. a batch the target's devices do not divide
                cells.append(f"- ({str(err).split(': ', 1)[1][:40]}...)")
                continue
            figure = f"{found.total / GiB:.1f}"
            cells.append(f"**{figure}**" if found.fits else figure)
        print(f"| {name} ({t.batch_size} x {config.data.seq_len}, {m.remat}, {t.grad_accum_steps}) | "
              + " | ".join(cells) + " |", flush=True)


if __name__ == "__main__":
    main()
