"""The distilled Swedish multilingual BERT: a BERT teacher adapted to Swedish text by masked LM, distilled
LightMBERT-style (hidden-state and attention MSE at the last layer, embeddings trained too) into its bottom 6
layers, fine-tuned for Swedish NER (Webbnyheter 2012: IO tags, 0 for outside).

    python recipes/mbert_swedish_distilled.py [--teacher MBERT_DIR]   # --scale cpu: the shared Swedish text
    python recipes/mbert_swedish_distilled.py --scale tpu --teacher bert-base-multilingual-cased/ \\
        --corpus 'gigaword_sv/*.txt' --bucket gs://my-bucket  [--run]

At --scale cpu without --teacher, the teacher is a small BERT pretrained here by masked LM on the Swedish text
(the shared data holds no multilingual BERT); with --teacher (a Hugging Face BERT folder) it is imported and
adapted, as at full size.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recipe import (RAW_TEXT, REPO, SHARED, Recipe, Step, capped, copy_down, copy_up, corpus_step,  # noqa: E402
                    cpu_training, export, finetune, main, prepare, tokenizer, tpu_vm)

WEBBNYHETER = SHARED / "extra_ner"
TEXT = (RAW_TEXT / "libreoffice_help_sv.txt",)
CONFIGS = REPO / "configs"
# The seed (Addedk/mbert-swedish-distilled-cased; AddedK/swedish-mbert-distillation): bert-base-multilingual-cased
# adapted by MLM, then distilled, each one pass over the 2010-2015 Swedish Culturomics Gigaword (~9 GB) at
# lr 1e-4, 10% warmup, blocks of 512. Its batch of 4 cannot be split over a v3-8's 8 cores: 8 here (one block
# per core), 240k steps (~1B tokens) each.
FULL = ("data.seq_len=512", "train.batch_size=8", "train.steps=240000", "optimizer.learning_rate=1e-4",
        "schedule.warmup_steps=24000")
# The teacher pretrained here when no --teacher is given: 4 layers of hidden 128 (a BERT the 2 cores train in
# minutes), at BERT's pretraining learning rate rather than bert_mlm.yaml's continued-training one.
SMALL_TEACHER = ("model.architecture=bert", "model.embedding_size=128", "model.hidden_size=128", "model.num_layers=4",
                 "model.num_heads=2", "model.intermediate_size=512", "model.max_position_embeddings=128",
                 "data.vocab_size=16000", "optimizer.learning_rate=5e-4")
NER = ("--outside-tag", "0", "--skip-malformed", "--dev-fraction", "0.1",
       "--test", str(WEBBNYHETER / "sv_webbnyheter2012_test_corpus.txt"))

# The model card gives no usage snippet: transformers' own for any encoder, on a Swedish sentence.
SNIPPET = '''
from transformers import AutoModel, AutoTokenizer

tokenizer = AutoTokenizer.from_pretrained(MODEL)
model = AutoModel.from_pretrained(MODEL)
inputs = tokenizer("Kungliga biblioteket ligger i Stockholm.", return_tensors="pt")
print(type(model).__name__, model(**inputs).last_hidden_state.shape)
print(tokenizer.tokenize("Kungliga biblioteket ligger i Stockholm."))
'''


def options(parser) -> None:
    parser.add_argument("--teacher", type=Path, default=None,
                        help="a Hugging Face BERT folder (e.g. bert-base-multilingual-cased) to import and adapt; "
                             "cpu default: a small BERT pretrained here")
    parser.add_argument("--student-layers", type=int, default=None, help="default: 6 (tpu), 2 (cpu)")


def ner(args, out: Path, student: Path) -> list[Step]:
    train = WEBBNYHETER / "sv_webbnyheter2012_train_corpus.txt"
    if args.max_sentences:
        train, cap = capped(train, out / "data" / train.name, args.max_sentences)
        return [cap, finetune("ner", student, out / "ner", args, train, *NER)]
    return [finetune("ner", student, out / "ner", args, train, *NER)]


def imported(args, out: Path) -> Step:
    return Step(f"the teacher {args.teacher} imported with configs/bert_mlm.yaml",
                ("import", str(args.teacher), str(out / "teacher"), "--config", str(CONFIGS / "bert_mlm.yaml")),
                done=out / "teacher" / "config.yaml")


def cpu(args, out: Path) -> list[Step]:
    corpus, steps = corpus_step(args, TEXT, out)
    training = cpu_training(args.steps, warmup=1000)
    layers = args.student_layers or 2
    distill = ("distill", "--teacher", str(out / "teacher"), "--student-layers", str(layers), "--data",
               str(out / "prepared"), "--config", str(CONFIGS / "distill_mbert.yaml"), "--no-freeze-embeddings",
               "--run-dir", str(out / "student"), "--no-progress", f"train.steps={args.steps}", "train.batch_size=32",
               f"schedule.warmup_steps={max(1, args.steps // 10)}", f"checkpoint.every_steps={max(1, args.steps // 4)}",
               "optimizer.learning_rate=5e-4")
    if args.teacher is None:
        teacher = [tokenizer(corpus, out / "tokenizer", "--kind", "wordpiece", "--vocab-size", "16000", "--no-lowercase"),
                   prepare(corpus, out / "tokenizer", out / "prepared", "--seq-len", "128", "--eval-fraction", "0.05"),
                   Step("the teacher: a small BERT pretrained by masked LM (configs/bert_mlm.yaml)",
                        ("pretrain", "--config", str(CONFIGS / "bert_mlm.yaml"), "--run-dir", str(out / "teacher"),
                         "--no-progress", f"data.prepared={out / 'prepared'}", "data.eval_fraction=0.05",
                         *SMALL_TEACHER, *training))]
    else:
        teacher = [imported(args, out),
                   prepare(corpus, out / "teacher" / "tokenizer", out / "prepared", "--seq-len", "128",
                           "--eval-fraction", "0.05"),
                   Step("the teacher adapted by masked LM", ("pretrain", "--config", str(out / "teacher" / "config.yaml"),
                        "--run-dir", str(out / "teacher"), "--no-progress", f"data.prepared={out / 'prepared'}",
                        "data.eval_fraction=0.05", *training))]
    return [*steps, *teacher,
            Step(f"the teacher distilled into its bottom {layers} layers", distill),
            export(out / "student", out / "hf"),
            *ner(args, out, out / "hf")]


def tpu(args, out: Path) -> list[Step]:
    corpus = args.corpus or ["SWEDISH_GIGAWORD_2010_2015/*.txt"]
    args.teacher = args.teacher or Path("bert-base-multilingual-cased")
    bucket = f"{args.bucket}/mbert-sv"
    layers = args.student_layers or 6
    return [imported(args, out),
            prepare(corpus, out / "teacher" / "tokenizer", out / "prepared", "--seq-len", "512", "--workers", "8",
                    "--eval-fraction", "0.001"),
            copy_up(out / "prepared", f"{bucket}/prepared"),
            copy_up(out / "teacher", f"{bucket}/teacher"),
            *tpu_vm(args, "mbert-sv-mlm", f"{bucket}/teacher", "--config", f"{bucket}/teacher/config.yaml",
                    f"data.prepared={bucket}/prepared", "data.eval_fraction=0.001", *FULL)[:3],
            *tpu_vm(args, "mbert-sv-distill", f"{bucket}/student", "--teacher", f"{bucket}/teacher", "--student-layers",
                    str(layers), "--data", f"{bucket}/prepared", "--config", "configs/distill_mbert.yaml",
                    "--no-freeze-embeddings", *FULL, command="distill")[2:],
            copy_down(f"{bucket}/student", out / "student"),
            export(out / "student", out / "hf"),
            *ner(args, out, out / "hf")]


RECIPE = Recipe(name="mbert_swedish_distilled", seed="distilled Swedish mBERT (6 of 12 layers)", cpu=cpu, tpu=tpu,
                model=lambda out: out / "hf", results=lambda out: {"Webbnyheter NER": out / "ner"}, snippet=SNIPPET,
                corpus=TEXT, cpu_steps=1000, needs=(WEBBNYHETER / "sv_webbnyheter2012_train_corpus.txt",),
                options=options)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
