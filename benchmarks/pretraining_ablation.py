"""ELECTRA's options past the 2020 recipe at CPU scale: each arm pretrains the same preset on the same Spanish
text, tokenizer and shards for the same steps, then fine-tunes on AnCora NER; one random initialisation of
the same discriminator (the arms do not change its shape) is the floor every arm is read against.

Arms (overrides of the preset; `generator_layers=half` is half the preset's discriminator depth):
  baseline            google-research/electra's recipe (one shared embedding table)
  gdes                objective.embedding_sharing=gdes (DeBERTaV3's gradient-disentangled sharing)
  whole_word_masking  objective.whole_word_masking=true
  gdes+wwm            both
  generator_layers    model.generator_layers = half the discriminator's layers

Every step is a printed CLI command (`pretraining_lift.py`'s steps 1-5); a finished step is not redone, so the
arms can be run a few at a time into the same --out. Prints and writes (results.md, results.json) a table of
the held-out generator and discriminator losses at the last step and dev and test entity F1 (mean +- sd over
seeds) per arm, over every arm finished in --out. Choose a default from the dev column.

    python benchmarks/pretraining_ablation.py [--config configs/electra_cpu.yaml] [--arms baseline,gdes,...]
        [--seeds 3] [--epochs 3] [--learning-rate 1e-3] [--out runs/pretraining_ablation]
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import machine  # noqa: E402
from learning_curve import REPO  # noqa: E402
from pretraining_lift import (check_shared_data, finetune_ner, finetune_tag, held_out_records, mean_sd,  # noqa: E402
                              pretrain, shared_inputs)


def arms(config: str) -> dict[str, list[str]]:
    layers = (yaml.safe_load(Path(config).read_text()).get("model") or {}).get("num_layers", 12)
    both = ["objective.embedding_sharing=gdes", "objective.whole_word_masking=true"]
    return {"baseline": [], "gdes": both[:1], "whole_word_masking": both[1:], "gdes+wwm": both,
            "generator_layers": [f"model.generator_layers={max(1, layers // 2)}"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(REPO / "configs" / "electra_cpu.yaml"))
    parser.add_argument("--arms", default="baseline,gdes,whole_word_masking,gdes+wwm,generator_layers",
                        help="comma-separated, run in this order")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--out", default=str(REPO / "runs" / "pretraining_ablation"))
    args = parser.parse_args()
    check_shared_data()
    known = arms(args.config)
    chosen = args.arms.split(",")
    unknown = [a for a in chosen if a not in known]
    if unknown:
        sys.exit(f"pretraining_ablation: unknown arm(s) {', '.join(unknown)}; known: {', '.join(known)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    prepared = shared_inputs(out, seconds)
    tag = finetune_tag(args)
    results: dict[str, dict] = {}
    for name in chosen:
        run_dir = out / name / "pretrain"
        run_dir.parent.mkdir(exist_ok=True)
        pretrain(run_dir, args.config, prepared, known[name], seconds, name=f"pretrain {name}")
        results[name] = {"overrides": known[name], "held_out": held_out_records(run_dir)[-1],
                         **finetune_ner(out / name / f"finetune-{tag}", run_dir, args, seconds)}
        if "random init" not in results:  # the discriminator every arm shares, from fresh parameters
            results["random init"] = {"overrides": [], "held_out": None,
                                      **finetune_ner(out / f"finetune-{tag}-random", run_dir, args, seconds,
                                                     random_init=True)}
        write_table(out, args, results, seconds)
    # Arms finished by earlier invocations into the same --out join the table.
    for name in known:
        folder = out / name / f"finetune-{tag}"
        if name not in results and (folder / "results.json").is_file():
            results[name] = {"overrides": known[name], "held_out": held_out_records(out / name / "pretrain")[-1],
                             **finetune_ner(folder, out / name / "pretrain", args, seconds)}
    print(write_table(out, args, results, seconds))


def write_table(out: Path, args, results: dict, seconds: dict) -> str:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=REPO).stdout.strip()
    fingerprint = json.loads((out / "prepared" / "metadata.json").read_text())["tokenizer"]["fingerprint"][:12]
    floor = results.get("random init")
    lines = [f"AnCora NER entity F1 x 100 (mean +- sd over {args.seeds} seeds; fine-tuning {args.epochs} epochs at lr "
             f"{args.learning_rate:g}); {Path(args.config).name}, tokenizer {fingerprint}",
             f"measured {datetime.date.today()} at commit {commit}; {machine.describe()}", "",
             "| arm | overrides | held-out gen loss | held-out disc loss | AUC | dev F1 | test F1 | dev lift | "
             "test lift |", "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        h = r["held_out"]
        losses = (f"{h['eval_generator_loss']:.3f} | {h['eval_discriminator_loss']:.4f} | "
                  f"{h['eval_discriminator_auc']:.3f}") if h else "- | - | -"
        lift = " | ".join(f"{100 * (statistics.fmean(r[s]) - statistics.fmean(floor[s])):+.2f}"
                          if floor and name != "random init" else "-" for s in ("dev", "test"))
        lines.append(f"| {name} | {' '.join(r['overrides']) or '-'} | {losses} | {mean_sd(r['dev'])} | "
                     f"{mean_sd(r['test'])} | {lift} |")
    if seconds:
        lines += ["", "wall time: " + ", ".join(f"{name} {s / 60:.1f} min" for name, s in seconds.items())]
    table = "\n".join(lines) + "\n"
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"config": args.config, "finetune": vars(args), "results": results,
                                                  "seconds": seconds, "commit": commit, "tokenizer": fingerprint},
                                                 indent=2) + "\n")
    return table


if __name__ == "__main__":
    main()
