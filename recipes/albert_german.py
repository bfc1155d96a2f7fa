"""A German ALBERT fine-tuned for GermEval 2014 NER (the seed, abhilash1910/albert-german-ner, is ALBERT-base
fine-tuned on GermEval at 128 tokens, batch 32, 3 epochs). Here the ALBERT is pretrained on German text first.

    python recipes/albert_german.py                  # --scale cpu: the shared German text, minutes on 2 cores
    python recipes/albert_german.py --scale tpu --corpus 'de/*.txt' --bucket gs://my-bucket  [--run]

The shared copy of GermEval (danplus_ner/de_news_*) has dev and test only (token first, outer tags in column 1);
their 7,298 sentences are pooled and split 80/10/10 with a fixed seed.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe import (RAW_TEXT, REPO, SHARED, Recipe, Step, capped, copy_down, copy_up, corpus_step,  # noqa: E402
                    cpu_training, export, finetune, main, prepare, split_three, tokenizer, tpu_vm)

GERMEVAL = SHARED / "danplus_ner"
TEXT = tuple(RAW_TEXT / name for name in ("libreoffice_help_de.txt", "debian_handbook_de.txt",
                                           "debian_paketmanagement_buch_de.txt"))
# ALBERT-base (configs/albert_base_v2.yaml: 12 layers sharing one, hidden 768, embeddings 128, 30k SentencePiece,
# sequences of 512, LAMB lr 1.76e-3 at batch 4096 for 125k steps); fine-tuned as the seed: 128 tokens, batch 32,
# 3 epochs.
FULL_VOCAB = "30000"

# The seed card's usage; it loads TFAutoModelForTokenClassification, and transformers 5 has no TensorFlow
# classes, so its PyTorch twin stands in for it.
SNIPPET = '''
from transformers import AutoTokenizer, AutoModelForTokenClassification
from transformers import pipeline

model=AutoModelForTokenClassification.from_pretrained(MODEL)
tokenizer=AutoTokenizer.from_pretrained(MODEL)
ner_model = pipeline('ner', model=model, tokenizer=tokenizer)
seq='Berlin ist die Hauptstadt von Deutschland'
print(ner_model(seq))
'''


def ner(args, out: Path, init: Path) -> list[Step]:
    split = out / "data" / "germeval"
    train, cap = capped(split / "train.tsv", out / "data" / "germeval_train_capped.tsv", args.max_sentences)
    return [split_three([GERMEVAL / "de_news_dev.tsv", GERMEVAL / "de_news_test.tsv"], split), *([cap] if cap else []),
            finetune("ner", init, out / "ner", args, train, "--dev", str(split / "dev.tsv"), "--test",
                     str(split / "test.tsv"), "--seq-len", "128", "--batch-size", "32")]


def cpu(args, out: Path) -> list[Step]:
    corpus, steps = corpus_step(args, TEXT, out)
    return [*steps,
            tokenizer(corpus, out / "tokenizer", "--kind", "sentencepiece", "--vocab-size", "8000"),
            prepare(corpus, out / "tokenizer", out / "prepared", "--format", "albert", "--seq-len", "128",
                    "--eval-fraction", "0.02"),
            Step("pretrain (configs/albert_smoke.yaml at 128 tokens)",
                 ("pretrain", "--config", str(REPO / "configs" / "albert_smoke.yaml"), "--run-dir", str(out / "pretrain"),
                  "--no-progress", f"data.prepared={out / 'prepared'}", "data.eval_fraction=0.02", "data.vocab_size=8000",
                  "data.seq_len=128", "objective.max_predictions=20", *cpu_training(args.steps, warmup=100))),
            export(out / "pretrain", out / "hf"),
            *ner(args, out, out / "hf")]


def tpu(args, out: Path) -> list[Step]:
    corpus = args.corpus or ["GERMAN_TEXT/*.txt"]
    bucket = f"{args.bucket}/albert-german"
    return [tokenizer(corpus, out / "tokenizer", "--kind", "sentencepiece", "--vocab-size", FULL_VOCAB),
            prepare(corpus, out / "tokenizer", out / "prepared", "--format", "albert", "--seq-len", "512",
                    "--workers", "8", "--eval-fraction", "0.001"),
            copy_up(out / "prepared", f"{bucket}/prepared"),
            *tpu_vm(args, "albert-german", f"{bucket}/run", "--config", "configs/albert_base_v2.yaml",
                    f"data.prepared={bucket}/prepared", "data.eval_fraction=0.001"),
            copy_down(f"{bucket}/run", out / "pretrain"),
            export(out / "pretrain", out / "hf"),
            *ner(args, out, out / "hf")]


RECIPE = Recipe(name="albert_german", seed="German ALBERT for GermEval 2014 NER", cpu=cpu, tpu=tpu,
                model=lambda out: out / "ner" / "hf", results=lambda out: {"GermEval 2014 NER": out / "ner"},
                snippet=SNIPPET, corpus=TEXT, cpu_steps=1000, needs=(GERMEVAL / "de_news_dev.tsv",))

if __name__ == "__main__":
    sys.exit(main(RECIPE))
