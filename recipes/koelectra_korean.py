"""KoELECTRA-small (v3): a Korean ELECTRA-small whose WordPiece keeps at most 6,000 characters and reserves 200
[unused] tokens, fine-tuned for KLUE NER (character-level BIO).

    python recipes/koelectra_korean.py                  # --scale cpu: the shared Korean text, minutes on 2 cores
    python recipes/koelectra_korean.py --scale tpu --corpus 'ko/*.txt' --bucket gs://my-bucket  [--run]

The shared KLUE-NER v1.1 is its dev set only: its sentences are split 80/10/10 into train/dev/test with a
fixed seed. (KoELECTRA reports Naver NER; KLUE NER is the same kind of task with a public licence.)
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe import (RAW_TEXT, REPO, SHARED, Recipe, Step, capped, copy_down, copy_up, corpus_step,  # noqa: E402
                    cpu_training, export, finetune, main, prepare, split_three, tokenizer, tpu_vm)

KLUE = SHARED / "extra_ner" / "ko_klue-ner-v1.1_dev.tsv"
TEXT = (RAW_TEXT / "libreoffice_help_ko.txt",)
VOCAB = ("--limit-alphabet", "6000", "--unused", "200", "--no-lowercase")
# The seed (monologg/KoELECTRA, small v3): ELECTRA-Small's shape (12 layers, hidden 256, embeddings 128, 4 heads)
# with a generator as wide as the discriminator, a 35,000-token cased WordPiece (v3's text was split by Mecab
# first: pre-split your corpus the same way), sequences of 512, batch 512, lr 5e-4, 800k steps on a v3-8.
# At 512 tokens a v3-8 core holds 64 rows only with remat: `electra-jax plan --target v3-8 --choose` on these
# settings picks model.remat=dots (6.3 of 16 GiB per core, bf16).
FULL = ("data.vocab_size=35000", "data.seq_len=512", "model.generator_fraction=1.0", "train.batch_size=512",
        "train.steps=800000", "model.remat=dots")

# The KoELECTRA README's usage, as published (its MODEL is "monologg/koelectra-small-v3-discriminator").
SNIPPET = '''
from transformers import ElectraModel, ElectraTokenizer

model = ElectraModel.from_pretrained(MODEL)
tokenizer = ElectraTokenizer.from_pretrained(MODEL)
tokens = tokenizer.tokenize("[CLS] 한국어 ELECTRA를 공유합니다. [SEP]")
print(tokens)
print(tokenizer.convert_tokens_to_ids(tokens))
'''


def ner(args, out: Path, init: Path) -> list[Step]:
    split = out / "data" / "klue"
    train, cap = capped(split / "train.tsv", out / "data" / "klue_train_capped.tsv", args.max_sentences)
    return [split_three([KLUE], split), *([cap] if cap else []),
            finetune("ner", init, out / "ner", args, train, "--dev", str(split / "dev.tsv"), "--test",
                     str(split / "test.tsv"))]


def cpu(args, out: Path) -> list[Step]:
    corpus, steps = corpus_step(args, TEXT, out)
    return [*steps,
            tokenizer(corpus, out / "tokenizer", "--kind", "wordpiece", "--vocab-size", "16000", *VOCAB),
            prepare(corpus, out / "tokenizer", out / "prepared", "--seq-len", "128", "--eval-fraction", "0.05"),  # a small text: 5% is 2 batches
            Step("pretrain (configs/electra_cpu.yaml, generator as wide as the discriminator as KoELECTRA-small)",
                 ("pretrain", "--config", str(REPO / "configs" / "electra_cpu.yaml"), "--run-dir", str(out / "pretrain"),
                  "--no-progress", f"data.prepared={out / 'prepared'}", "data.eval_fraction=0.05",
                  "model.generator_fraction=1.0", *cpu_training(args.steps))),
            export(out / "pretrain", out / "hf"),
            *ner(args, out, out / "hf" / "discriminator")]


def tpu(args, out: Path) -> list[Step]:
    corpus = args.corpus or ["KOREAN_TEXT_MECAB_SPLIT/*.txt"]
    bucket = f"{args.bucket}/koelectra-small"
    return [tokenizer(corpus, out / "tokenizer", "--kind", "wordpiece", "--vocab-size", "35000", *VOCAB),
            prepare(corpus, out / "tokenizer", out / "prepared", "--seq-len", "512", "--workers", "8",
                    "--eval-fraction", "0.001"),
            copy_up(out / "prepared", f"{bucket}/prepared"),
            *tpu_vm(args, "koelectra-small", f"{bucket}/run", "--config", "configs/electra_small.yaml",
                    f"data.prepared={bucket}/prepared", "data.eval_fraction=0.001", *FULL),
            copy_down(f"{bucket}/run", out / "pretrain"),
            export(out / "pretrain", out / "hf"),
            *ner(args, out, out / "hf" / "discriminator")]


RECIPE = Recipe(name="koelectra_korean", seed="KoELECTRA-small v3 (Korean)", cpu=cpu, tpu=tpu,
                model=lambda out: out / "hf" / "discriminator", results=lambda out: {"KLUE NER": out / "ner"},
                snippet=SNIPPET, corpus=TEXT, cpu_steps=1000, needs=(KLUE,))

if __name__ == "__main__":
    sys.exit(main(RECIPE))
