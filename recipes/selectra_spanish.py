"""SELECTRA: a cased Spanish ELECTRA-medium with a warm restart half-way, fine-tuned for AnCora NER and UD
Spanish-GSD POS.

    python recipes/selectra_spanish.py                  # --scale cpu: the shared Spanish text, minutes on 2 cores
    python recipes/selectra_spanish.py --scale tpu --corpus 'oscar_es/*.txt' --bucket gs://my-bucket  [--run]
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe import (RAW_TEXT, REPO, SHARED, Recipe, Step, capped, copy_down, copy_up, corpus_step,  # noqa: E402
                    cpu_training, export, finetune, main, prepare, tokenizer, tpu_vm)

ANCORA = SHARED / "ancora_es_ner"
UD = SHARED / "ud_pos" / "UD_Spanish-GSD"
TEXT = tuple(RAW_TEXT / name for name in ("bible_es_reina_valera_1909.txt", "libreoffice_help_es.txt",
                                           "debian_handbook_es.txt"))
# The seed (Recognai/selectra_medium; argilla-io/selectra): 12 layers, hidden = embeddings = 384, a cased 50k
# WordPiece (tokenizers' trainer, limit_alphabet 1000, min_frequency 2), sequences of 512, batch 128, lr 5e-4
# with 10k warmup; configs/electra_medium.yaml holds it, with its warm restart half-way through 300k steps.
FULL_VOCAB = ("--vocab-size", "50000", "--limit-alphabet", "1000", "--min-frequency", "2", "--no-lowercase")

# The SELECTRA model card's usage, as published (its MODEL is "Recognai/selectra_small").
SNIPPET = '''
from transformers import ElectraForPreTraining, ElectraTokenizerFast

discriminator = ElectraForPreTraining.from_pretrained(MODEL)
tokenizer = ElectraTokenizerFast.from_pretrained(MODEL)

sentence_with_fake_token = "Estamos desayunando pan rosa con tomate y aceite de oliva."

inputs = tokenizer.encode(sentence_with_fake_token, return_tensors="pt")
logits = discriminator(inputs).logits.tolist()[0]

print("\\t".join(tokenizer.tokenize(sentence_with_fake_token)))
print("\\t".join(map(lambda x: str(x)[:4], logits[1:-1])))
'''


def tasks(args, out: Path, init: Path) -> list[Step]:
    """AnCora NER; UD Spanish-GSD POS (the shared copy has dev and test only: a tenth of dev is held out as dev)."""
    ner_train, ner_cap = capped(ANCORA / "ancora_ner_train.tsv", out / "data" / "ancora_ner_train.tsv", args.max_sentences)
    pos_train, pos_cap = capped(UD / "es_gsd-ud-dev.conllu", out / "data" / "es_gsd-ud-dev.conllu", args.max_sentences,
                                tag_column=3)
    return [*(s for s in (ner_cap, pos_cap) if s),
            finetune("ner", init, out / "ner", args, ner_train, "--dev", str(ANCORA / "ancora_ner_dev.tsv"),
                     "--test", str(ANCORA / "ancora_ner_test.tsv")),
            finetune("pos", init, out / "pos", args, pos_train, "--dev-fraction", "0.1",
                     "--test", str(UD / "es_gsd-ud-test.conllu"))]


def cpu(args, out: Path) -> list[Step]:
    corpus, steps = corpus_step(args, TEXT, out)
    training = cpu_training(args.steps)
    return [*steps,
            tokenizer(corpus, out / "tokenizer", "--kind", "wordpiece", "--vocab-size", "16000", "--limit-alphabet",
                      "1000", "--no-lowercase"),
            prepare(corpus, out / "tokenizer", out / "prepared", "--seq-len", "128", "--eval-fraction", "0.02"),
            Step("pretrain (configs/electra_cpu.yaml, warm restart half-way as SELECTRA)",
                 ("pretrain", "--config", str(REPO / "configs" / "electra_cpu.yaml"), "--run-dir", str(out / "pretrain"),
                  "--no-progress", f"data.prepared={out / 'prepared'}", "data.eval_fraction=0.02", *training,
                  f"schedule.restarts=[{args.steps // 2}]")),
            export(out / "pretrain", out / "hf"),
            *tasks(args, out, out / "hf" / "discriminator")]


def tpu(args, out: Path) -> list[Step]:
    corpus = args.corpus or ["OSCAR_ES/*.txt"]
    bucket = f"{args.bucket}/selectra"
    return [tokenizer(corpus, out / "tokenizer", "--kind", "wordpiece", *FULL_VOCAB),
            prepare(corpus, out / "tokenizer", out / "prepared", "--seq-len", "512", "--workers", "8",
                    "--eval-fraction", "0.001"),
            copy_up(out / "prepared", f"{bucket}/prepared"),
            *tpu_vm(args, "selectra", f"{bucket}/run", "--config", "configs/electra_medium.yaml",
                    f"data.prepared={bucket}/prepared", "data.eval_fraction=0.001"),
            copy_down(f"{bucket}/run", out / "pretrain"),
            export(out / "pretrain", out / "hf"),
            *tasks(args, out, out / "hf" / "discriminator")]


RECIPE = Recipe(name="selectra_spanish", seed="SELECTRA (Spanish ELECTRA-medium, cased, warm restart)", cpu=cpu,
                tpu=tpu, model=lambda out: out / "hf" / "discriminator",
                results=lambda out: {"AnCora NER": out / "ner", "UD Spanish-GSD POS": out / "pos"},
                snippet=SNIPPET, corpus=TEXT, cpu_steps=1000,
                needs=(ANCORA / "ancora_ner_train.tsv", UD / "es_gsd-ud-dev.conllu"))

if __name__ == "__main__":
    sys.exit(main(RECIPE))
