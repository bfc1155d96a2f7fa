"""Ælæctra: a cased Danish ELECTRA-small, fine-tuned for DaNE NER (DaN+ news) with and without MISC.

    python recipes/aelaectra_danish.py                  # --scale cpu: the shared Danish text, minutes on 2 cores
    python recipes/aelaectra_danish.py --scale tpu --corpus 'gigaword/*.txt' --bucket gs://my-bucket  [--run]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe import (RAW_TEXT, REPO, SHARED, Recipe, Step, capped, copy_down, copy_up, corpus_step,  # noqa: E402
                    cpu_training, export, finetune, main, prepare, tokenizer, tpu_vm)

DANE = SHARED / "danplus_ner"
TEXT = (RAW_TEXT / "libreoffice_help_da.txt",)
# The seed: ELECTRA-Small (12 layers, hidden 256, embeddings 128), a cased 32k WordPiece vocabulary, sequences
# of 128, batch 128, the paper's schedule (lr 5e-4, 10k warmup, linear decay) for 1M steps.
FULL_VOCAB = 32000
FULL_STEPS = 1_000_000

# The Ælæctra model card's usage, as published.
SNIPPET = '''
from transformers import AutoTokenizer, AutoModelForPreTraining

tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModelForPreTraining.from_pretrained(MODEL)
print(type(model).__name__, model(**tokenizer("Ælæctra er en dansk sprogmodel.", return_tensors="pt")).logits.shape)
'''


def ner(args, out: Path, init: Path) -> list[Step]:
    train, cap = capped(DANE / "da_news_train.tsv", out / "data" / "da_news_train.tsv", args.max_sentences)
    files = ("--dev", str(DANE / "da_news_dev.tsv"), "--test", str(DANE / "da_news_test.tsv"))
    return [*([cap] if cap else []),
            finetune("ner", init, out / "ner", args, train, *files),
            finetune("ner", init, out / "ner_no_misc", args, train, *files, "--drop-tags", "MISC")]


def cpu(args, out: Path) -> list[Step]:
    corpus, steps = corpus_step(args, TEXT, out)
    return [*steps,
            tokenizer(corpus, out / "tokenizer", "--kind", "wordpiece", "--vocab-size", "16000", "--no-lowercase"),
            prepare(corpus, out / "tokenizer", out / "prepared", "--seq-len", "128", "--eval-fraction", "0.02"),
            Step("pretrain (configs/electra_cpu.yaml)", ("pretrain", "--config", str(REPO / "configs" / "electra_cpu.yaml"),
                 "--run-dir", str(out / "pretrain"), "--no-progress", f"data.prepared={out / 'prepared'}",
                 "data.eval_fraction=0.02", *cpu_training(args.steps))),
            export(out / "pretrain", out / "hf"),
            *ner(args, out, out / "hf" / "discriminator")]


def tpu(args, out: Path) -> list[Step]:
    corpus = args.corpus or ["DANISH_GIGAWORD/*.txt"]
    bucket = f"{args.bucket}/aelaectra"
    return [tokenizer(corpus, out / "tokenizer", "--kind", "wordpiece", "--vocab-size", str(FULL_VOCAB), "--no-lowercase"),
            prepare(corpus, out / "tokenizer", out / "prepared", "--seq-len", "128", "--workers", "8",
                    "--eval-fraction", "0.001"),
            copy_up(out / "prepared", f"{bucket}/prepared"),
            *tpu_vm(args, "aelaectra", f"{bucket}/run", "--config", "configs/electra_small.yaml",
                    f"data.prepared={bucket}/prepared", "data.eval_fraction=0.001", f"data.vocab_size={FULL_VOCAB}",
                    f"train.steps={FULL_STEPS}"),
            copy_down(f"{bucket}/run", out / "pretrain"),
            export(out / "pretrain", out / "hf"),
            *ner(args, out, out / "hf" / "discriminator")]


RECIPE = Recipe(name="aelaectra_danish", seed="Ælæctra (Danish ELECTRA-small, cased)", cpu=cpu, tpu=tpu,
                model=lambda out: out / "hf" / "discriminator",
                results=lambda out: {"DaNE NER": out / "ner", "DaNE NER without MISC": out / "ner_no_misc"},
                snippet=SNIPPET, corpus=TEXT, cpu_steps=1000, needs=(DANE / "da_news_train.tsv",))

if __name__ == "__main__":
    sys.exit(main(RECIPE))
