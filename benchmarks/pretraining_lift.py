"""Does pretraining help? A preset pretrained on the shared Spanish text, fine-tuned on AnCora NER, against
the same architecture from random initialisation with the same tokenizer and the same fine-tuning settings.

Every step is a CLI command, printed before it runs, so the table can be reproduced by hand:
  1. the shared Spanish text (Bible, LibreOffice help, Debian handbook) as one file of 20-paragraph documents;
  2. `electra-jax tokenizer train`: a 16k cased WordPiece on it;
  3. `electra-jax prepare --eval-fraction 0.02`: packed shards, 2% of the documents held out;
  4. `electra-jax pretrain --config CONFIG` on the prepared folder (held-out evaluation on);
  5. `electra-jax finetune --task ner` on AnCora train/dev/test, `--seeds N`, once from the run and once with
     `--random-init` (the run's architecture and tokenizer with fresh parameters).
Prints the held-out pretraining metrics and a table of dev and test entity F1 (mean +- sd over seeds) with the
lift; writes results.json and results.md in --out. Fine-tuning settings are meant to be chosen on dev.

    python benchmarks/pretraining_lift.py [--config configs/electra_cpu.yaml] [--seeds 3] [--epochs 3]
        [--learning-rate 1e-3] [--out runs/pretraining_lift] [section.key=value ...]

A finished step is not redone when its output is complete (a rerun after a fine-tuning change reuses the
pretraining run); a half-written output stops the script with the folder to remove.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402
from learning_curve import REPO, spanish_corpus  # noqa: E402

ANCORA = REPO.parent / "shared" / "data" / "ancora_es_ner"
VOCAB_SIZE, SEQ_LEN, EVAL_FRACTION = 16000, 128, 0.02


def run(command: list[str], log: Path) -> float:
    """Runs one CLI command (printed first), its output in `log`; seconds taken."""
    print("$ " + shlex.join(command), flush=True)
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, cwd=REPO)
    if done.returncode:
        sys.exit(f"pretraining_lift: the command above failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def step_done(folder: Path, marker: str) -> bool:
    if (folder / marker).is_file():
        return True
    if folder.exists():
        sys.exit(f"pretraining_lift: {folder} is incomplete (no {marker}); remove it and run again")
    return False


def pretrain_finished(run_dir: Path) -> bool:
    """True when the run's newest checkpoint is its configured last step."""
    if not (run_dir / "config.yaml").is_file():
        return False
    steps = yaml.safe_load((run_dir / "config.yaml").read_text())["train"]["steps"]
    saved = [int(p.name) for p in (run_dir / "checkpoints").glob("*") if p.name.isdigit()]
    return max(saved, default=0) >= steps


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "electra_jax", *args]


def mean_sd(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.fmean(values):.2f} +- {100 * sd:.2f}"


def effective_ranks(run_dir: Path, out: Path, sentences: int = 64) -> dict[str, list[float]]:
    """Per layer (embedding output first), the effective rank (sum(s)^2 / sum(s^2) of the centred token
    vectors' singular values) of the discriminator's hidden states on the first AnCora dev sentences: the
    pretrained model's and a fresh one's of the same architecture. A representation that has collapsed
    onto a few directions fine-tunes worse than a random one."""
    import torch
    from transformers import AutoTokenizer, ElectraModel
    from transformers.utils import logging
    logging.set_verbosity_error()  # the discriminator head's weights, unused by ElectraModel, are expected
    hf = out / "hf"
    if not (hf / "discriminator" / "config.json").is_file():
        run(cli("export", str(run_dir), str(hf)), out / "export.log")
    blocks = (ANCORA / "ancora_ner_dev.tsv").read_text(encoding="utf-8").split("\n\n")[:sentences]
    text = [" ".join(line.split("\t")[0] for line in block.splitlines() if "\t" in line) for block in blocks]
    tokenizer = AutoTokenizer.from_pretrained(hf / "discriminator")
    batch = tokenizer(text, return_tensors="pt", padding=True, truncation=True, max_length=SEQ_LEN)
    real = batch["attention_mask"].bool()
    torch.manual_seed(0)
    pretrained = ElectraModel.from_pretrained(hf / "discriminator")
    models = {"pretrained": pretrained, "random init": ElectraModel(pretrained.config)}
    ranks = {}
    for name, model in models.items():
        with torch.no_grad():
            states = model.eval()(**batch, output_hidden_states=True).hidden_states
        ranks[name] = []
        for h in states:
            s = torch.linalg.svdvals(h[real] - h[real].mean(0))
            ranks[name].append(float(s.sum() ** 2 / (s ** 2).sum()))
    return ranks


def shared_inputs(out: Path, seconds: dict) -> Path:
    """Steps 1-3 in `out`: the corpus file, the 16k WordPiece and the packed shards; returns the prepared folder.
    The tokenizer trainer is deterministic (data/tokenizer.py), so a rerun in a new folder makes the same
    vocabulary and shards."""
    corpus = spanish_corpus(out / "es.txt")
    tokenizer = out / "tokenizer"
    if not step_done(tokenizer, "tokenizer.json"):
        seconds["tokenizer"] = run(cli("tokenizer", "train", "--input", str(corpus), "--kind", "wordpiece",
                                       "--vocab-size", str(VOCAB_SIZE), "--out", str(tokenizer)),
                                   out / "tokenizer.log")
    prepared = out / "prepared"
    if not step_done(prepared, "metadata.json"):
        seconds["prepare"] = run(cli("prepare", "--input", str(corpus), "--tokenizer", str(tokenizer), "--out",
                                     str(prepared), "--seq-len", str(SEQ_LEN), "--eval-fraction", str(EVAL_FRACTION),
                                     "--no-progress"), out / "prepare.log")
    return prepared


def pretrain(run_dir: Path, config: str, prepared: Path, overrides: list[str], seconds: dict,
             name: str = "pretrain") -> None:
    """Step 4: the preset on the prepared folder with held-out evaluation (skipped when finished). A run stopped
    early (SIGTERM saves a checkpoint and the curves too) is resumed by the same command, not taken as done."""
    if not pretrain_finished(run_dir):
        seconds[name] = run(cli("pretrain", "--config", config, "--run-dir", str(run_dir), "--no-progress",
                                f"data.prepared={prepared}", f"data.eval_fraction={EVAL_FRACTION}", *overrides),
                            run_dir.parent / f"{run_dir.name}.log")


def held_out_records(run_dir: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "eval_discriminator_auc" in r]


def finetune_tag(args) -> str:
    return f"lr{args.learning_rate:g}-e{args.epochs}-s{args.seeds}"


def finetune_ner(folder: Path, run_dir: Path, args, seconds: dict, random_init: bool = False) -> dict:
    """Step 5: AnCora NER from the run (or its architecture with fresh parameters); per seed dev and test F1."""
    if not step_done(folder, "results.json"):
        seconds[folder.name] = run(cli(
            "finetune", "--task", "ner", "--train", str(ANCORA / "ancora_ner_train.tsv"),
            "--dev", str(ANCORA / "ancora_ner_dev.tsv"), "--test", str(ANCORA / "ancora_ner_test.tsv"),
            "--init", str(run_dir), "--out", str(folder), "--seeds", str(args.seeds), "--epochs",
            str(args.epochs), "--learning-rate", str(args.learning_rate), *(["--random-init"] if random_init else [])),
            folder.parent / f"{folder.name}.log")
    summary = json.loads((folder / "results.json").read_text())
    return {"dev": [r["dev"]["f1"] for r in summary["runs"]], "test": [r["test"]["f1"] for r in summary["runs"]]}


def check_shared_data() -> None:
    missing = [p for p in ("ancora_ner_train.tsv", "ancora_ner_dev.tsv", "ancora_ner_test.tsv")
               if not (ANCORA / p).is_file()]
    if missing:
        sys.exit(f"{Path(sys.argv[0]).stem}: {ANCORA} lacks {', '.join(missing)} (only the project's own checkout "
                 f"has ../shared/data)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "electra_cpu.yaml"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--out", default=str(REPO / "runs" / "pretraining_lift"))
    parser.add_argument("overrides", nargs="*", help="section.key=value for the pretraining run")
    args = parser.parse_args()
    check_shared_data()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    prepared = shared_inputs(out, seconds)
    run_dir = out / "pretrain"
    pretrain(run_dir, args.config, prepared, args.overrides, seconds)
    held_out = held_out_records(run_dir)
    tag = finetune_tag(args)
    results = {"pretrained": finetune_ner(out / f"finetune-{tag}-pretrained", run_dir, args, seconds),
               "random init": finetune_ner(out / f"finetune-{tag}-random", run_dir, args, seconds, random_init=True)}

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    lines = [f"AnCora NER entity F1 x 100 (mean +- sd over {args.seeds} seeds; fine-tuning {args.epochs} epochs at "
             f"lr {args.learning_rate:g}); {Path(args.config).name} {' '.join(args.overrides)}".rstrip(),
             f"measured {datetime.date.today()} at commit {commit}; {machine.describe()}", "",
             "| initialisation | dev F1 | test F1 | test F1 per seed |", "|---|---|---|---|"]
    for side, r in results.items():
        lines.append(f"| {side} | {mean_sd(r['dev'])} | {mean_sd(r['test'])} | "
                     + ", ".join(f"{100 * v:.2f}" for v in r["test"]) + " |")
    lift = {split: 100 * (statistics.fmean(results["pretrained"][split])
                          - statistics.fmean(results["random init"][split])) for split in ("dev", "test")}
    lines += ["", f"lift from pretraining: dev {lift['dev']:+.2f}, test {lift['test']:+.2f} F1"]
    if held_out:
        last = held_out[-1]
        lines.append(f"pretraining, held-out at step {last['step']}: generator loss {last['eval_generator_loss']:.3f}, "
                     f"discriminator loss {last['eval_discriminator_loss']:.4f}, AUC "
                     f"{last['eval_discriminator_auc']:.3f}, replaced-token F1 {last['eval_replaced_f1']:.3f}")
    ranks = effective_ranks(run_dir, out)
    lines.append("discriminator hidden states on 64 AnCora dev sentences, effective rank per layer (embeddings "
                 "first): " + "; ".join(f"{name} " + ", ".join(f"{r:.0f}" for r in values)
                                        for name, values in ranks.items()))
    if seconds:
        lines.append("wall time: " + ", ".join(f"{name} {s / 60:.1f} min" for name, s in seconds.items()))
    table = "\n".join(lines) + "\n"
    print(table)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"config": args.config, "overrides": args.overrides,
                                                  "finetune": vars(args), "results": results, "lift": lift,
                                                  "held_out": held_out, "effective_ranks": ranks,
                                                  "seconds": seconds, "commit": commit},
                                                 indent=2) + "\n")


if __name__ == "__main__":
    main()
