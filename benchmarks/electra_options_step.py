"""What ELECTRA's options cost per step: ELECTRA-small's train step on this CPU with the defaults, with
objective.embedding_sharing=gdes, with objective.whole_word_masking, with both, and with a generator of half
the depth (model.generator_layers=6), each timed in its own process by benchmarks/train_step.py, in rounds
(every variant once per round) so all sample the machine's load. Prints the median s/step and its ratio to
the defaults measured in the same run.

    python benchmarks/electra_options_step.py [--batch 32] [--seq 128] [--steps 5] [--rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

VARIANTS = {
    "defaults (full sharing, token masking)": [],
    "embedding_sharing=gdes": ["objective.embedding_sharing=gdes"],
    "whole_word_masking": ["objective.whole_word_masking=true"],
    "gdes + whole_word_masking": ["objective.embedding_sharing=gdes", "objective.whole_word_masking=true"],
    "generator_layers=6": ["model.generator_layers=6"],
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per variant and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train_step.py")
    seconds = {name: [] for name in VARIANTS}
    for _ in range(args.rounds):
        for name, overrides in VARIANTS.items():
            command = [sys.executable, script, "--side", "jax", "--batch", str(args.batch), "--seq", str(args.seq),
                       "--steps", str(args.steps), "--vocab", "30522", *(f"--set={o}" for o in overrides)]
            output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
            seconds[name].append(json.loads(output.strip().splitlines()[-1])["seconds"])
    print(machine.describe())
    print(f"ELECTRA-small (configs/electra_small.yaml), batch {args.batch} x seq {args.seq}, fp32, {os.cpu_count()} "
          f"threads; median of {args.rounds} rounds x {args.steps} steps")
    base = float(np.median(seconds[next(iter(VARIANTS))]))
    for name, times in seconds.items():
        median = float(np.median(times))
        rounds = ", ".join(f"{t:.3f}" for t in times)
        print(f"{name:40s} {median:7.3f} s/step  x{median / base:5.3f} of the defaults  (rounds: {rounds} s)")


if __name__ == "__main__":
    main()
