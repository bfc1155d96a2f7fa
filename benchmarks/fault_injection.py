"""Every fault case of docs/reliability.md in one go, run as a user would (fresh `electra-jax` processes on a
tiny ELECTRA), printed as a table: case | outcome | what the user saw.

A case passes when the promise holds (the data kept, the one-line message or the fallback) and no traceback
reached the user. Takes a few minutes on 2 cores.

    python benchmarks/fault_injection.py [--work /tmp/electra-faults] [--only NAME ...]
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import machine  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
SMOKE = REPO / "configs" / "electra_smoke.yaml"
TINY = ["model.embedding_size=16", "model.hidden_size=32", "model.num_layers=2", "model.num_heads=2",
        "model.intermediate_size=64", "model.generator_fraction=0.5", "model.max_position_embeddings=32",
        "data.seq_len=32", "data.vocab_size=300", "objective.max_predictions=5", "train.batch_size=16",
        "train.log_every=1", "schedule.warmup_steps=2", "checkpoint.keep=5"]
ENV = {**{k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}, "JAX_PLATFORMS": "cpu"}
CASES = {}
TRANSCRIPT: list[str] = []  # every command's output in the case being run; kept in its folder as outputs.log


def case(name: str):
    def register(fn):
        CASES[name] = fn
        return fn
    return register


class Result:
    def __init__(self, code, out, err, seconds):
        self.code, self.out, self.err, self.seconds = code, out, err, seconds

    @property
    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]

    @property
    def clean(self) -> bool:
        return "Traceback" not in self.out + self.err

    def said(self) -> str:
        """The line the user reads: the error, else the warning, else the last line."""
        for prefix in ("error:", "warning:"):
            lines = [line for line in (self.err + "\n" + self.out).splitlines() if line.startswith(prefix)]
            if lines:
                return lines[0]
        lines = [line for line in (self.out + self.err).splitlines() if line.strip()]
        return lines[-1] if lines else ""


def cli(*argv, wrap=(), timeout=600) -> Result:
    start = time.perf_counter()
    done = subprocess.run([*wrap, sys.executable, "-m", "electra_jax", *map(str, argv)], capture_output=True,
                          text=True, env=ENV, cwd=REPO, timeout=timeout)
    TRANSCRIPT.append(f"$ electra-jax {' '.join(map(str, argv))}\n{done.stdout}{done.stderr}")
    return Result(done.returncode, done.stdout, done.stderr, time.perf_counter() - start)


def pretrain(run_dir, *overrides, config=SMOKE) -> Result:
    return cli("pretrain", "--config", config, "--run-dir", run_dir, "--no-progress", *TINY, *overrides)


def popen_pretrain(run_dir, *overrides):
    command = [sys.executable, "-m", "electra_jax", "pretrain", "--config", str(SMOKE), "--run-dir", str(run_dir),
               "--no-progress", *TINY, *overrides]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)


def wait_for_steps(run_dir: Path, steps: int, process, limit: float = 300) -> None:
    metrics, deadline = run_dir / "metrics.jsonl", time.time() + limit
    while time.time() < deadline and process.poll() is None:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= steps:
            return
        time.sleep(0.05)


def checkpoints(run_dir: Path) -> list[int]:
    folder = run_dir / "checkpoints"
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit()) if folder.is_dir() else []


def logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


# ---------------------------------------------------------------------------- the cases

@case("1 two trainers on one run directory")
def two_trainers(work: Path, base: Path):
    run = work / "run"
    first = popen_pretrain(run, "train.steps=60", "checkpoint.every_steps=20")
    wait_for_steps(run, 3, first)
    second = pretrain(run, "train.steps=60", "optimizer.learning_rate=1e-3")
    out, err = first.communicate(timeout=600)
    ok = (second.code == 2 and len(second.errors) == 1 and "is in use by pid" in second.said() and first.returncode == 0
          and logged_steps(run) == list(range(1, 61)) and "learning_rate: 0.0005" in (run / "config.yaml").read_text())
    return ok and second.clean, second.said()


@case("2 a refused override on an existing run")
def refused_override(work: Path, base: Path):
    run = copy_run(base, work)
    before = (run / "config.yaml").read_bytes()
    refused = pretrain(run, "train.steps=8", "model.hidden_size=64")
    kept = (run / "config.yaml").read_bytes() == before
    resumed = cli("pretrain", "--config", run / "config.yaml", "--run-dir", run, "--no-progress", "train.steps=8")
    exported = cli("export", run, work / "hf")
    ok = refused.code == 2 and len(refused.errors) == 1 and kept and resumed.code == 0 and exported.code == 0
    return ok and refused.clean and resumed.clean, refused.said()


def truncate_arrays(checkpoint: Path) -> None:
    for blob in (checkpoint / "state").rglob("*"):
        if blob.is_file() and blob.parent.name == "d":
            blob.write_bytes(blob.read_bytes()[: blob.stat().st_size // 3])


@case("3a a truncated newest checkpoint: pretrain, export, finetune --init")
def truncated(work: Path, base: Path):
    run = copy_run(base, work)
    truncate_arrays(run / "checkpoints" / "4")
    exported = cli("export", run, work / "hf")
    tuned = finetune(run, work / "ft")
    resumed = pretrain(run, "train.steps=6", "checkpoint.every_steps=2")
    ok = (exported.code == 0 and "exported step 2" in exported.out and tuned.code == 0
          and "resumed from step 2" in resumed.out and resumed.code == 0
          and (run / "checkpoints.damaged" / "4").is_dir() and logged_steps(run) == list(range(1, 7)))
    return ok and exported.clean and tuned.clean and resumed.clean, resumed.said()


def finetune(init: Path, out: Path) -> Result:
    data = out.parent / "ner.conll"
    data.write_text("".join(f"word{i} {'B-PER' if i % 3 == 0 else 'O'}\n" + ("\n" if i % 5 == 4 else "")
                            for i in range(200)))
    return cli("finetune", "--task", "ner", "--train", data, "--dev", data, "--init", init, "--out", out,
               "--epochs", "1", "--seq-len", "32")


@case("3b a deleted state/ folder in the newest checkpoint")
def deleted_state(work: Path, base: Path):
    run = copy_run(base, work)
    shutil.rmtree(run / "checkpoints" / "4" / "state")
    resumed = pretrain(run, "train.steps=6", "checkpoint.every_steps=2")
    return resumed.code == 0 and "resumed from step 2" in resumed.out and resumed.clean, resumed.said()


@case("3c a damaged state/_METADATA")
def damaged_metadata(work: Path, base: Path):
    run = copy_run(base, work)
    (run / "checkpoints" / "4" / "state" / "_METADATA").write_text("{not json")
    exported = cli("export", run, work / "hf")
    resumed = pretrain(run, "train.steps=6", "checkpoint.every_steps=2")
    ok = exported.code == 0 and resumed.code == 0 and "resumed from step 2" in resumed.out
    return ok and exported.clean and resumed.clean, exported.said()


@case("3d no intact checkpoint at all")
def none_intact(work: Path, base: Path):
    run = copy_run(base, work)
    for step in checkpoints(run):
        shutil.rmtree(run / "checkpoints" / str(step) / "state")
    resumed = pretrain(run, "train.steps=6")
    exported = cli("export", run, work / "hf")
    ok = (resumed.code == 2 and "no intact checkpoint" in resumed.said() and exported.code == 2
          and checkpoints(run) == [2, 4])
    return ok and resumed.clean and exported.clean, resumed.said()


@case("4 a failed first run (empty corpus), then the real corpus")
def empty_then_real(work: Path, base: Path):
    empty = work / "empty.txt"
    empty.write_text("")
    run = work / "run"
    failed = pretrain(run, f"data.corpus=[{empty}]", "train.steps=4")
    rerun = pretrain(run, f"data.corpus=[{corpus_file(work)}]", "train.steps=4")
    vocab = (run / "tokenizer" / "vocab.txt").read_text().splitlines() if rerun.code == 0 else []
    ok = failed.code == 2 and "no text found" in failed.said() and rerun.code == 0 and len(vocab) == 300
    return ok and failed.clean and rerun.clean, failed.said()


def corpus_file(work: Path) -> Path:
    path = work / "corpus.txt"
    if not path.exists():
        sys.path.insert(0, str(REPO))
        from electra_jax.data.default_corpus import write_default_corpus
        write_default_corpus(path, num_documents=300)
    return path


@case("5 pretrain data.corpus=[.gz with a stray Latin-1 byte]")
def gzip_latin1(work: Path, base: Path):
    text = corpus_file(work).read_bytes().replace(b"the ", b"caf\xe9 the ", 3)
    packed = work / "corpus.txt.gz"
    packed.write_bytes(gzip.compress(text))
    trained = pretrain(work / "run", f"data.corpus=[{packed}]", "train.steps=4")
    tokenized = cli("tokenizer", "train", "--input", packed, "--out", work / "tok", "--vocab-size", "300")
    reports = [line for line in trained.out.splitlines() if line.startswith("skipped or repaired:")]
    ok = (trained.code == 0 and len(reports) == 2 and all("invalid UTF-8 lines repaired" in r for r in reports)
          and "invalid UTF-8 lines repaired" in tokenized.out)
    return ok and trained.clean and tokenized.clean, reports[0] if reports else trained.said()


@case("6 tokenizer train on one 50 MB line (text; no spaces)")
def long_line(work: Path, base: Path):
    said = []
    ok = True
    for kind, piece in (("text", "Søren går på skole i Århus og læser bøger. "), ("no spaces", "abcdefghij" * 1000)):
        path = work / f"{kind}.txt"
        with open(path, "w", encoding="utf-8") as handle:
            for _ in range(50_000_000 // len(piece.encode()) + 1):
                handle.write(piece)
            handle.write("\n")
        result = cli("tokenizer", "train", "--input", path, "--out", work / f"tok-{kind}", "--vocab-size", "2000",
                     wrap=("/usr/bin/time", "-f", "maxrss_kb=%M"))
        rss = int(result.err.rsplit("maxrss_kb=", 1)[1].split()[0])
        ok = ok and result.code == 0 and result.seconds < 60 and rss < 1 << 20 and result.clean
        said.append(f"{kind}: {result.seconds:.1f} s, {rss / 1024:.0f} MB")
    return ok, "; ".join(said)


@case("7 three tokenizer runs on the same corpus")
def determinism(work: Path, base: Path):
    corpus = SHARED / "raw_text" / "libreoffice_help_da.txt"
    if not corpus.is_file():
        corpus = corpus_file(work)
    digests = set()
    for run in range(3):
        result = cli("tokenizer", "train", "--input", corpus, "--vocab-size", "8000", "--out", work / f"tok{run}")
        digests.add(hashlib.sha256((work / f"tok{run}" / "vocab.txt").read_bytes()).hexdigest()[:12])
    return len(digests) == 1, f"{corpus.name}: vocab.txt sha256 {', '.join(sorted(digests))}"


@case("8 kill -9 mid-run, then resume")
def sigkill(work: Path, base: Path):
    run = work / "run"
    victim = popen_pretrain(run, "train.steps=80", "checkpoint.every_steps=10")
    wait_for_steps(run, 25, victim)
    victim.kill()
    victim.communicate()
    resumed = pretrain(run, "train.steps=80", "checkpoint.every_steps=10")
    steps = logged_steps(run)
    discarded = (run / "metrics.discarded.jsonl").is_file()
    ok = victim.returncode == -signal.SIGKILL and resumed.code == 0 and steps == list(range(1, 81)) and discarded
    return ok and resumed.clean, f"metrics.jsonl steps 1..{steps[-1]} once each; discarded: {discarded}"


@case("9 Ctrl-C, then Ctrl-C twice")
def ctrl_c(work: Path, base: Path):
    run = work / "run"
    victim = popen_pretrain(run, "train.steps=400", "checkpoint.every_steps=1000")
    wait_for_steps(run, 5, victim)
    victim.send_signal(signal.SIGINT)
    out, err = victim.communicate(timeout=300)
    saved, first_code = checkpoints(run), victim.returncode
    once = first_code == 130 and saved and "stopped on SIGINT: saved step" in out
    twice_run = work / "twice"
    victim = popen_pretrain(twice_run, "train.steps=400", "checkpoint.every_steps=1000")
    wait_for_steps(twice_run, 5, victim)
    victim.send_signal(signal.SIGINT)
    victim.send_signal(signal.SIGINT)
    started = time.perf_counter()
    _, err2 = victim.communicate(timeout=300)
    seconds = time.perf_counter() - started
    twice = victim.returncode == 130 and seconds < 10
    ok = bool(once and twice) and "Traceback" not in err + err2
    return ok, (f"once: exit {first_code}, saved step {saved[-1] if saved else None}; twice: exit {victim.returncode} "
                f"after {seconds:.1f} s")


@case("10a optimizer.learning_rate=.nan")
def nan_lr(work: Path, base: Path):
    result = pretrain(work / "run", "optimizer.learning_rate=.nan")
    return result.code == 2 and "finite" in result.said() and result.clean, result.said()


@case("10b a read-only run directory")
def read_only(work: Path, base: Path):
    run = work / "run"
    run.mkdir()
    wrap = ()
    if os.geteuid() == 0:
        wrap = ("unshare", "-m", "sh", "-c", 'mount --bind "$0" "$0" && mount -o remount,ro,bind "$0" && exec "$@"',
                str(run))
    else:
        run.chmod(0o555)
    result = cli("pretrain", "--config", SMOKE, "--run-dir", run, "--no-progress", *TINY, wrap=wrap)
    return result.code == 2 and "cannot write" in result.said() and result.clean, result.said()


@case("10c a truncated model.safetensors on import")
def truncated_safetensors(work: Path, base: Path):
    exported = cli("export", base, work / "hf")
    weights = work / "hf" / "discriminator" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    result = cli("import", work / "hf" / "discriminator", work / "imported")
    return exported.code == 0 and result.code == 2 and result.clean, result.said()


@case("10d a pytorch_model.bin that runs code when unpickled")
def malicious_pickle(work: Path, base: Path):
    folder = work / "hf"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "electra"}))
    script = ("import os, torch, sys\nclass Evil:\n    def __reduce__(self):\n        return (os.system, ('touch "
              f"{work / 'PWNED'}',))\ntorch.save({{'w': Evil()}}, sys.argv[1])\n")
    subprocess.run([sys.executable, "-c", script, str(folder / "pytorch_model.bin")], check=True)
    result = cli("import", folder, work / "imported")
    ok = result.code == 2 and "objects other than tensors" in result.said() and not (work / "PWNED").exists()
    return ok and "weights_only=False" not in result.err and result.clean, result.said()


@case("10e bench --steps 0")
def bench_zero(work: Path, base: Path):
    result = cli("bench", "--config", SMOKE, "--steps", "0")
    return result.code == 2 and result.clean, result.said()


@case("10f a NaN loss before the first checkpoint")
def nan_first(work: Path, base: Path):
    result = pretrain(work / "run", "train.steps=40", "checkpoint.every_steps=100", "optimizer.learning_rate=1e30",
                      f"data.corpus=[{corpus_file(work)}]")
    return result.code == 3 and "no checkpoint yet" in result.said() and result.clean, result.said()


# ---------------------------------------------------------------------------- running them

def copy_run(base: Path, work: Path) -> Path:
    run = work / "run"
    shutil.copytree(base, run)
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/electra-faults", help="scratch folder (emptied first)")
    parser.add_argument("--only", nargs="+", help="case numbers to run, e.g. 3a 9")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    print(machine.describe())
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    print(f"commit {commit.strip()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    base = work / "base"  # 4 steps, checkpoints at 2 and 4: what the damage cases start from
    made = pretrain(base, f"data.corpus=[{corpus_file(work)}]", "train.steps=4", "checkpoint.every_steps=2")
    assert made.code == 0, made.err
    rows, failed = [], 0
    for name, run_case in CASES.items():
        if args.only and name.split()[0] not in args.only:
            continue
        folder = work / name.split()[0]
        folder.mkdir()
        start = time.perf_counter()
        try:
            ok, said = run_case(folder, base)
        except Exception as err:  # noqa: BLE001 - a case that breaks is a failed case, reported in its row
            ok, said = False, f"the case itself failed: {type(err).__name__}: {err}"
        failed += not ok
        (folder / "outputs.log").write_text("\n".join(TRANSCRIPT))
        TRANSCRIPT.clear()
        rows.append((name, "kept" if ok else "FAILED", f"{time.perf_counter() - start:.0f} s", said))
        print(f"{name} ... {'ok' if ok else 'FAILED'}", file=sys.stderr, flush=True)
    print()
    print("| case | outcome | time | what the user saw |")
    print("|---|---|---|---|")
    for name, outcome, seconds, said in rows:
        print(f"| {name} | {outcome} | {seconds} | {said.replace('|', '/')[:300]} |")
    print(f"\n{len(rows) - failed} of {len(rows)} cases kept their promise")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
