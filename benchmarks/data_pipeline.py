"""Corpus -> batches on this CPU: prepare throughput (1 vs 2 workers), peak memory as the input grows, and
the loader against what the ELECTRA-small train step consumes, all measured in the same run.

References measured here: the WordPiece tokenizer alone on one thread (what a prepare worker can at best
reach) and the ELECTRA-small train step (paper dims, batch 32 x seq 128, fp32) on this CPU.

    python benchmarks/data_pipeline.py [--text-dir ../shared/data/raw_text] [--scale 4]
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def build_corpus(text_dir: Path, out: Path, copies: int) -> int:
    """The text files of `text_dir`, one document each, repeated `copies` times; returns its size in bytes."""
    texts = [p.read_text(encoding="utf-8") for p in sorted(text_dir.glob("*.txt"))]
    with open(out, "w", encoding="utf-8") as handle:
        for _ in range(copies):
            for text in texts:
                handle.write(text.strip("\n") + "\n\n")
    return out.stat().st_size


def peak_tree_rss(command: list[str]) -> tuple[float, float, float]:
    """Runs `command`; returns (seconds, peak RSS of the main process, peak RSS of it plus its workers) in MB."""
    import psutil
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    watched = psutil.Process(process.pid)
    peaks = {"main": 0, "tree": 0}

    def sample():
        while process.poll() is None:
            try:
                main = watched.memory_info().rss
                tree = main + sum(c.memory_info().rss for c in watched.children(recursive=True))
            except psutil.Error:
                continue
            peaks["main"], peaks["tree"] = max(peaks["main"], main), max(peaks["tree"], tree)
            time.sleep(0.02)

    start = time.perf_counter()
    sampler = threading.Thread(target=sample)
    sampler.start()
    output = process.communicate()[0]
    seconds = time.perf_counter() - start
    sampler.join()
    if process.returncode:
        raise RuntimeError(output)
    return seconds, peaks["main"] / 1e6, peaks["tree"] / 1e6


def tokenizer_alone_mb_per_s(corpus: Path, tokenizer_dir: Path) -> float:
    """One thread of the Rust tokenizer on the corpus lines: the ceiling of one prepare worker."""
    code = ("import sys, time; from electra_jax.data.text_tokenizer import load_text_tokenizer\n"
            "t = load_text_tokenizer(sys.argv[2]); lines = [l.strip() for l in open(sys.argv[1], encoding='utf-8')]\n"
            "lines = [l for l in lines if l]; start = time.perf_counter()\n"
            "for i in range(0, len(lines), 2000): t.encode_lines(lines[i:i + 2000])\n"
            "print(time.perf_counter() - start)")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    seconds = float(subprocess.run([sys.executable, "-c", code, str(corpus), str(tokenizer_dir)], env=env,
                                   capture_output=True, text=True, check=True).stdout)
    return corpus.stat().st_size / 1e6 / seconds


def prepare_command(corpus: Path, tokenizer_dir: Path, out: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "electra_jax", "prepare", "--input", str(corpus), "--tokenizer", str(tokenizer_dir),
            "--out", str(out), "--seq-len", "128", "--workers", str(workers), "--no-progress"]


def loader_sequences_per_s(prepared: Path, batch: int, batches: int) -> float:
    from electra_jax.data.loader import PretrainingData
    data = PretrainingData(prepared, batch, seed=0)
    for _ in range(5):
        next(data)
    start = time.perf_counter()
    for _ in range(batches):
        next(data)
    return batches * batch / (time.perf_counter() - start)


def train_step_sequences_per_s(batch: int, steps: int) -> float:
    """The ELECTRA-small step of benchmarks/train_step.py, in a fresh process (it uses every core)."""
    code = ("import sys, json; sys.path.insert(0, sys.argv[1]); import argparse, train_step as b\n"
            f"args = argparse.Namespace(batch={batch}, seq=128, vocab=30522, steps={steps})\n"
            "config = b.make_config(args); ids, seg = b.synthetic_batch(args.batch, args.seq, args.vocab)\n"
            "print(b.median_step_seconds(b.jax_step(config, ids, seg), args.steps))")
    seconds = float(subprocess.run([sys.executable, "-c", code, str(REPO / "benchmarks")], capture_output=True,
                                   text=True, check=True, cwd=REPO).stdout.strip().splitlines()[-1])
    return batch / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--text-dir", type=Path, default=REPO.parent / "shared" / "data" / "raw_text")
    parser.add_argument("--scale", type=int, default=4, help="the larger input is this many copies of the corpus")
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    if not args.text_dir.is_dir():
        sys.exit(f"no text folder {args.text_dir} (pass --text-dir with .txt files)")
    from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        size_1x = build_corpus(args.text_dir, tmp / "corpus_1x.txt", 1)
        size_nx = build_corpus(args.text_dir, tmp / f"corpus_{args.scale}x.txt", args.scale)
        tokenizer_dir = tmp / "tokenizer"
        save_tokenizer(train_wordpiece([tmp / "corpus_1x.txt"], 30522), tokenizer_dir)
        print(machine.describe())
        print(f"corpus: {len(list(args.text_dir.glob('*.txt')))} files of {args.text_dir}, {size_1x / 1e6:.1f} MB; "
              f"WordPiece vocabulary 30522; seq 128; {os.cpu_count()} cores")

        ceiling = tokenizer_alone_mb_per_s(tmp / "corpus_1x.txt", tokenizer_dir)
        print(f"reference: the tokenizer alone, one thread: {ceiling:.2f} MB/s")
        runs = {}
        for workers in (1, 2):
            seconds, main_mb, tree_mb = peak_tree_rss(prepare_command(tmp / "corpus_1x.txt", tokenizer_dir,
                                                                      tmp / f"prepared_w{workers}", workers))
            runs[workers] = seconds
            rate = size_1x / 1e6 / seconds
            print(f"prepare, {workers} worker(s): {seconds:6.1f} s, {rate:.2f} MB/s, {rate / workers:.2f} MB/s per "
                  f"worker ({rate / workers / ceiling:.0%} of the tokenizer alone); peak RSS {tree_mb:.0f} MB "
                  f"(main process {main_mb:.0f} MB)")
        print(f"2 workers vs 1: {runs[1] / runs[2]:.2f}x")
        peaks = {}
        for copies, corpus, size in ((1, tmp / "corpus_1x.txt", size_1x),
                                     (args.scale, tmp / f"corpus_{args.scale}x.txt", size_nx)):
            seconds, main_mb, tree_mb = peak_tree_rss(prepare_command(corpus, tokenizer_dir, tmp / f"rss_{copies}x", 2))
            peaks[copies] = tree_mb
            print(f"peak RSS, {copies}x input ({size / 1e6:.0f} MB), 2 workers: {tree_mb:.0f} MB "
                  f"(main process {main_mb:.0f} MB), {size / 1e6 / seconds:.2f} MB/s")
        print(f"peak RSS {args.scale}x / 1x: {peaks[args.scale] / peaks[1]:.2f}")

        loader = loader_sequences_per_s(tmp / "prepared_w1", args.batch, 400)
        step = train_step_sequences_per_s(args.batch, 3)
        print(f"loader: {loader:,.0f} sequences/s (batch {args.batch}, one thread); ELECTRA-small train step "
              f"consumes {step:.1f} sequences/s; loader / step = {loader / step:,.0f}x")


if __name__ == "__main__":
    main()
