"""Training throughput on this CPU with batches read on the loop's thread against reader threads.

    python benchmarks/read_threads.py [--threads 0,2] [--steps 150] [--rounds 2]

Packs the embedded corpus once, then runs `electra-jax pretrain` with configs/electra_smoke.yaml for --steps
steps per setting of data.read_threads, in rounds (0, 2, 0, 2, ...) so every setting samples the machine's
load, each in a fresh process. Prints, per setting, the median tokens/s over the logged windows after the
first (compile excluded) and the median read time per step. This is what chose data.read_threads=-1's
CPU default.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def pretrain(run_dir: Path, prepared: Path, threads: int, steps: int) -> dict:
    subprocess.run([sys.executable, "-m", "electra_jax", "pretrain", "--config", str(REPO / "configs/electra_smoke.yaml"),
                    "--run-dir", str(run_dir), "--no-progress", f"data.prepared={prepared}", f"train.steps={steps}",
                    "train.log_every=10", "train.eval_every=0", f"checkpoint.every_steps={steps}", "mesh.data=1",
                    f"data.read_threads={threads}"], check=True, capture_output=True, cwd=REPO)
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()][1:]
    return {"tokens_per_s": statistics.median(r["tokens_per_second"] for r in records),
            "read_ms": statistics.median(r["read_ms_per_step"] for r in records)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="0,2")
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    settings = [int(t) for t in args.threads.split(",")]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        from electra_jax.data.default_corpus import write_default_corpus
        corpus = write_default_corpus(folder / "corpus.txt", num_documents=3000)
        for command in (["tokenizer", "train", "--input", str(corpus), "--out", str(folder / "tok"), "--vocab-size",
                         "2000"],
                        ["prepare", "--input", str(corpus), "--tokenizer", str(folder / "tok"), "--seq-len", "64",
                         "--out", str(folder / "data"), "--workers", "0", "--no-progress"]):
            subprocess.run([sys.executable, "-m", "electra_jax", *command], check=True, capture_output=True, cwd=REPO)
        results: dict[int, list[dict]] = {t: [] for t in settings}
        for round_ in range(args.rounds):
            for threads in settings:
                results[threads].append(pretrain(folder / f"run-{round_}-{threads}", folder / "data", threads,
                                                 args.steps))
    print(f"electra_smoke (batch 32 x 64), {args.steps} steps per run, {args.rounds} rounds")
    for threads, runs in results.items():
        each = ", ".join(f"{r['tokens_per_s']:,.0f}" for r in runs)
        print(f"data.read_threads={threads}: {statistics.median(r['tokens_per_s'] for r in runs):,.0f} tokens/s "
              f"(runs: {each}), read {statistics.median(r['read_ms'] for r in runs):.2f} ms per step")


if __name__ == "__main__":
    main()
