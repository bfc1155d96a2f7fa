"""`electra-jax <command> [options] [section.key=value ...]`."""
from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

from electra_jax.config import ConfigError
from electra_jax.finetune.schemes import SCHEMES
from electra_jax.finetune.sizes import SIZE_TABLE

TASK_NAMES = ("ner", "pos", "classify", "regression", "qa")  # finetune/tasks.py's TASKS (not imported: jax)
from electra_jax.host_memory import keep_freed_memory


def _pretrain(args) -> int:
    from electra_jax.config import load_config
    config = load_config(args.config, args.overrides)  # config errors before jax is even imported
    from electra_jax.train import pretrain
    return _train(args, config, pretrain)


def _train(args, config, run) -> int:
    """Join the processes of a multi-process run, then `run(config, run_dir)` (pretrain or distill) and report:
    exit code 0, 3 for a non-finite loss, 143 when preempted (SIGTERM), 130 when interrupted (Ctrl-C)."""
    from electra_jax.distributed import initialize
    initialize(args.coordinator, args.num_processes, args.process_id, auto=args.multihost)
    from electra_jax.train import NonFiniteLossError
    try:
        summary = run(config, args.run_dir, progress=not args.no_progress)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    from electra_jax.preemption import EXIT_CODES
    import signal
    # Stopped by a signal: saved, not finished; a babysitter reruns it.
    code = EXIT_CODES[signal.Signals[summary["signal"]]] if summary["preempted"] else 0
    import jax
    if jax.process_index() != 0:  # one voice for the run: process 0's
        return code
    final = summary["final"]
    if final:
        from electra_jax.families import family_of, shown
        summary_metrics = family_of(config.model).summary
        extra = "".join(f", {label} {final[key]:.4f}" for label, key in shown(summary_metrics, final))
        print(f"step {summary['end_step']}: loss {final['loss']:.4f}{extra}")
        held = {key[len("eval_"):]: value for key, value in final.items() if key.startswith("eval_")}
        if "loss" in held:
            extra = "".join(f", {label} {held[key]:.4f}" for label, key in shown(summary_metrics, held))
            auc = f", discriminator AUC {held['discriminator_auc']:.4f}" if "discriminator_auc" in held else ""
            print(f"held-out: loss {held['loss']:.4f}{extra}{auc}")
    print(f"checkpoints: {summary['checkpoints']}")
    print(f"metrics:     {summary['metrics']}")
    print(f"tensorboard: {summary['tensorboard']}")
    print(f"plot:        {summary['plot']}")
    return code


def _layer_map(text: str) -> tuple[tuple[int, int], ...]:
    try:
        pairs = tuple(tuple(int(n) for n in pair.split(":")) for pair in text.split(","))
    except ValueError:
        pairs = ((),)
    if any(len(pair) != 2 for pair in pairs):
        raise ConfigError(f"distill: --layer-map {text!r} must look like STUDENT:TEACHER[,...], e.g. 3:6,6:12")
    return pairs


def _distill(args) -> int:
    import dataclasses

    from electra_jax.config import load_config

    from electra_jax.validation import validate
    config = load_config(args.config, args.overrides)
    given = {"teacher": args.teacher, "student_layers": args.student_layers,
             "freeze_embeddings": args.freeze_embeddings,
             "layer_map": _layer_map(args.layer_map) if args.layer_map else None}
    data = {"prepared": args.data, "corpus": tuple(args.corpus) if args.corpus else None}
    config = dataclasses.replace(
        config, distill=dataclasses.replace(config.distill, **{k: v for k, v in given.items() if v is not None}),
        data=dataclasses.replace(config.data, **{k: v for k, v in data.items() if v is not None}))
    validate(config)  # config errors before jax is even imported
    from electra_jax.distill import distill
    return _train(args, config, distill)


def _bench(args) -> int:
    import json

    from electra_jax.config import load_config
    if args.steps < 1 or args.warmup < 0:
        raise ConfigError(f"bench: --steps must be at least 1 and --warmup at least 0, got --steps {args.steps} "
                          f"--warmup {args.warmup}")
    config = load_config(args.config, args.overrides)
    from electra_jax.bench import bench_phases
    results = bench_phases(config, steps=args.steps, warmup=args.warmup)
    if args.json:
        with open(args.json, "a", encoding="utf-8") as handle:
            for result in results:
                handle.write(json.dumps({"config": args.config, "overrides": args.overrides, **result}) + "\n")
    return 0


def _plan(args) -> int:
    from electra_jax.config import load_config
    from electra_jax.plan import TARGETS, choose, overrides, plan
    config, target = load_config(args.config, args.overrides), TARGETS[args.target]
    if args.choose:
        print(f"cheapest settings that fit a {target.name} device with headroom, in order:")
        found = choose(config, target, log=print)
        print(f"choose: {overrides(found)}")
    else:
        found = plan(config, target)
    print(found.report())
    return 0 if found.fits else 1


def _tokenizer_train(args) -> int:
    from electra_jax.data.vocabulary import VocabularyOptions, train_vocabulary
    options = VocabularyOptions(kind=args.kind, vocab_size=args.vocab_size, lowercase=args.lowercase,
                                strip_accents=args.strip_accents, limit_alphabet=args.limit_alphabet,
                                unused=args.unused, min_frequency=args.min_frequency,
                                character_coverage=args.character_coverage, max_lines=args.max_lines,
                                text_field=args.text_field, tfds_data_dir=args.tfds_data_dir)
    train_vocabulary(args.input, args.out, options)
    return 0


def _prepare(args) -> int:
    from electra_jax.data.prepare import PackOptions, prepare
    options = PackOptions(format=args.format, seq_len=args.seq_len, seed=args.seed,
                          short_seq_prob=args.short_seq_prob, single_segment_prob=args.single_segment_prob,
                          blank_lines_separate_docs=args.blank_lines_separate_docs, text_field=args.text_field,
                          tfds_data_dir=args.tfds_data_dir, examples_per_shard=args.examples_per_shard,
                          eval_fraction=args.eval_fraction)
    prepare(args.input, args.tokenizer, args.out, options, workers=args.workers, progress=not args.no_progress)
    return 0


def _finetune(args) -> int:
    from electra_jax.finetune.train import FinetuneOptions, finetune
    options = FinetuneOptions(task=args.task, seeds=args.seeds, epochs=args.epochs, learning_rate=args.learning_rate,
                              batch_size=args.batch_size, layerwise_decay=args.layerwise_decay,
                              seq_len=args.seq_len, tag_column=args.tag_column, token_column=args.token_column,
                              tag_scheme=args.tag_scheme, drop_tags=tuple(t.strip() for t in args.drop_tags.split(",") if t.strip()),
                              text_field=args.text_field,
                              pair_field=args.pair_field, label_field=args.label_field, random_init=args.random_init,
                              dev_fraction=args.dev_fraction or 0.0, outside_tag=args.outside_tag,
                              skip_malformed=args.skip_malformed, doc_stride=args.doc_stride,
                              max_query_length=args.max_query_length, max_answer_length=args.max_answer_length)
    finetune(args.train, args.dev, args.init, args.out, test=args.test, options=options)
    return 0


def _predict(args) -> int:
    from electra_jax.finetune.predict import predict
    overrides = {"seq_len": args.seq_len, "token_column": args.token_column, "tag_scheme": args.tag_scheme,
                 "outside_tag": args.outside_tag, "text_field": args.text_field, "pair_field": args.pair_field,
                 "doc_stride": args.doc_stride, "max_query_length": args.max_query_length,
                 "max_answer_length": args.max_answer_length}
    log = print if args.output else (lambda line: print(line, file=sys.stderr))  # stdout holds the predictions
    predict(args.model, args.input, args.output, task=args.task, overrides=overrides, batch_size=args.batch_size,
            log=log)
    return 0


def _add_source_options(parser) -> None:
    parser.add_argument("--input", nargs="+", required=True, metavar="SOURCE",
                        help="text files or globs (.gz too; one paragraph per line, blank lines between "
                             "documents), tfds:NAME[/CONFIG][:SPLIT] (a TFDS dataset already in --tfds-data-dir) "
                             "or hf:PATH[:SPLIT] (a dataset saved with datasets' save_to_disk)")
    parser.add_argument("--text-field", default="text", help="the text field of tfds:/hf: records")
    parser.add_argument("--tfds-data-dir", help="TFDS data_dir (default: TFDS's own, ~/tensorflow_datasets)")


def _add_run_options(parser) -> None:
    """What every training command takes: the progress bar and the multi-process options."""
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--multihost", action="store_true", help="join a multi-process run whose layout JAX finds "
                                                                 "itself (TPU VM slices, SLURM, Open MPI)")
    parser.add_argument("--coordinator", metavar="HOST:PORT", help="multi-process run: process 0's address")
    parser.add_argument("--num-processes", type=int, help="multi-process run: how many processes")
    parser.add_argument("--process-id", type=int, help="multi-process run: this process's id, 0 .. N-1")


def _export(args) -> int:
    from electra_jax.hf.export import export
    export(args.source, args.out_dir, step=args.step)
    return 0


def _import(args) -> int:
    from electra_jax.tf1 import import_tf1, is_tf1_checkpoint
    source = Path(args.hf_dir)
    tf1_only = {"--vocab": args.vocab, "--tf-config": args.tf_config, "--with-optimizer": args.with_optimizer,
                "--cased/--uncased": args.lowercase is not None, "section.key=value": args.overrides}
    if is_tf1_checkpoint(source):
        if args.generator:
            raise ConfigError("import: --generator pairs HF folders; a TF1 ELECTRA checkpoint holds both towers")
        import_tf1(source, Path(args.out_dir), vocab=Path(args.vocab) if args.vocab else None,
                   tf_config=Path(args.tf_config) if args.tf_config else None, with_optimizer=args.with_optimizer,
                   lowercase=args.lowercase, base_config=args.config, overrides=args.overrides)
        return 0
    given = [flag for flag, value in tf1_only.items() if value]
    if given:
        raise ConfigError(f"import: {', '.join(given)} apply to a TF1 checkpoint (model.ckpt-N), and {source} is not one")
    from electra_jax.hf.importer import import_hf
    import_hf(args.hf_dir, args.out_dir, generator=args.generator, base_config=args.config)
    return 0


class _ShowDefaults(argparse.HelpFormatter):
    """Every option's help ends with its default, unless the default is nothing (None, off) or the help says
    where the default comes from."""

    def _get_help_string(self, action):
        text = action.help or ""
        nothing = any(action.default is value for value in (None, False, "", argparse.SUPPRESS))
        if not action.option_strings or nothing or "default" in text or isinstance(action, argparse._HelpAction):
            return text
        return f"{text} (default: %(default)s)"


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("formatter_class", _ShowDefaults)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="electra-jax", description="Pretrain ELECTRA and ALBERT encoders in JAX.",
                     epilog=f"--debug anywhere on the line (or {DEBUG_ENV}=1) prints the full traceback of an error "
                            f"that is otherwise reported in one line")
    commands = parser.add_subparsers(dest="command", required=True)

    pre = commands.add_parser("pretrain", help="pretrain an ELECTRA (generator + discriminator) or an ALBERT "
                                               "(resumes if the run directory has checkpoints)")
    pre.add_argument("--config", required=True, help="YAML preset, e.g. configs/electra_smoke.yaml")
    pre.add_argument("--run-dir", default="runs/smoke", help="checkpoints, metrics, plot and resolved config")
    _add_run_options(pre)
    pre.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. train.steps=1000")
    pre.set_defaults(run=_pretrain, runs_steps=True)

    dis = commands.add_parser("distill", help="distil a BERT teacher into a student of its embeddings and bottom "
                                              "K layers (hidden-state and attention MSE, optional logit KD and "
                                              "MLM); resumes if the run directory has checkpoints")
    dis.add_argument("--teacher", help="a BERT run directory (e.g. from `electra-jax import`) or a Hugging Face "
                                       "BertForMaskedLM / BertForPreTraining / BertModel folder")
    dis.add_argument("--student-layers", type=int, metavar="K", help="the student's depth: the teacher's bottom K "
                                                                     "layers")
    source = dis.add_mutually_exclusive_group()
    source.add_argument("--data", metavar="PREPARED_DIR", help="a folder from `electra-jax prepare` made with the "
                                                               "teacher's tokenizer (RUN_DIR/tokenizer of an import)")
    source.add_argument("--corpus", nargs="+", metavar="FILE", help="text files, packed into the run directory with "
                                                                   "the teacher's tokenizer")
    dis.add_argument("--freeze-embeddings", action=argparse.BooleanOptionalAction, default=None,
                     help="keep the teacher's embeddings as they are (LightMBERT; the default) or train them")
    dis.add_argument("--layer-map", metavar="S:T[,S:T...]", help="student layer S matched to teacher layer T "
                                                                 "(0: embedding output); default: last to last")
    dis.add_argument("--config", help="YAML preset for training, optimizer, schedule, mesh, checkpoints and the "
                                      "distill.* loss weights, e.g. configs/distill_mbert.yaml (default: the package "
                                      "defaults)")
    dis.add_argument("--run-dir", required=True, help="checkpoints, metrics, plot, tokenizer and resolved config")
    _add_run_options(dis)
    dis.add_argument("overrides", nargs="*", metavar="section.key=value",
                     help="e.g. train.steps=1000 distill.logit_weight=1")
    dis.set_defaults(run=_distill, runs_steps=True)

    exp = commands.add_parser("export", help="write a run's checkpoint as Hugging Face PyTorch models "
                                             "(ELECTRA: OUT_DIR/discriminator and OUT_DIR/generator; ALBERT: "
                                             "OUT_DIR as an AlbertForPreTraining; BERT: OUT_DIR as a "
                                             "BertForMaskedLM)")
    exp.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory or one of its checkpoints")
    exp.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder")
    exp.add_argument("--step", type=int, help="which checkpoint (default: the newest finished one)")
    exp.set_defaults(run=_export)

    ben = commands.add_parser("bench", help="time a config's train step on the devices at hand (synthetic "
                                            "batches): compile time, step time, tokens/s, MFU, peak memory")
    ben.add_argument("--config", required=True, help="YAML preset, e.g. configs/electra_small.yaml")
    ben.add_argument("--steps", type=int, default=10, help="timed steps (the median is reported)")
    ben.add_argument("--warmup", type=int, default=2, help="untimed steps after compiling")
    ben.add_argument("--json", metavar="FILE", help="also append the result as one JSON line to FILE")
    ben.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. model.dtype=bfloat16")
    ben.set_defaults(run=_bench, runs_steps=True)

    from electra_jax.plan import TARGETS
    pla = commands.add_parser("plan", help="what one device of a TPU or GPU target holds for a config (parameters, "
                                           "optimizer state, gradients, saved activations) and whether it fits; "
                                           "exit status 1 when it does not")
    pla.add_argument("--config", required=True, help="YAML preset, e.g. configs/electra_base.yaml")
    pla.add_argument("--target", required=True, choices=sorted(TARGETS), help="the accelerator")
    pla.add_argument("--choose", action="store_true", help="pick the cheapest model.remat and "
                                                           "train.grad_accum_steps that fit and print them")
    pla.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. model.remat=dots")
    pla.set_defaults(run=_plan)

    imp = commands.add_parser("import", help="turn Hugging Face or google-research TensorFlow 1 ELECTRA, ALBERT or "
                                             "BERT weights into a run directory that pretrain continues and "
                                             "fine-tuning starts from")
    imp.add_argument("hf_dir", metavar="SOURCE", help="an ElectraForPreTraining / ElectraForMaskedLM / ElectraModel "
                                                      "folder, a folder with discriminator/ and generator/, or an "
                                                      "AlbertForPreTraining / AlbertForMaskedLM / AlbertModel folder "
                                                      "with its spiece.model, or a BertForPreTraining / "
                                                      "BertForMaskedLM / BertModel folder with its vocab.txt; or a "
                                                      "TF1 checkpoint of google-research/electra, albert or bert "
                                                      "(model.ckpt-N, or its folder)")
    imp.add_argument("out_dir", metavar="OUT_DIR", help="the new run directory")
    imp.add_argument("--generator", help="an ElectraForMaskedLM folder to pair with HF_DIR's discriminator")
    imp.add_argument("--config", help="preset for everything but the model (default: the package defaults)")
    tf1 = imp.add_argument_group("TF1 checkpoints (pip install 'electra-jax[tf]')")
    tf1.add_argument("--vocab", help="vocab.txt (ELECTRA, BERT) or ALBERT's SentencePiece .model (default: the one "
                                     "beside the checkpoint)")
    tf1.add_argument("--tf-config", help="the run's hparams JSON (electra) or albert_config.json / bert_config.json "
                                         "(default: the one beside the checkpoint)")
    tf1.add_argument("--with-optimizer", action="store_true", help="keep the Adam moments and global_step, so "
                                                                   "pretrain continues at the checkpoint's step")
    cased = tf1.add_mutually_exclusive_group()
    cased.add_argument("--cased", dest="lowercase", action="store_false", default=None,
                       help="the vocabulary is cased (do_lower_case=False)")
    cased.add_argument("--uncased", dest="lowercase", action="store_true", help="lowercase and strip accents")
    imp.add_argument("overrides", nargs="*", metavar="section.key=value",
                     help="TF1: the run's settings, e.g. train.steps=125000 (what the TF flags said)")
    imp.set_defaults(run=_import)

    tok = commands.add_parser("tokenizer", help="tokenizer tools")
    tok_commands = tok.add_subparsers(dest="tokenizer_command", required=True)
    train = tok_commands.add_parser("train", help="train a WordPiece (ELECTRA, BERT) or SentencePiece unigram "
                                                  "(ALBERT) vocabulary and report its coverage")
    _add_source_options(train)
    train.add_argument("--out", required=True, help="a new (or empty) folder; transformers' "
                                                    "AutoTokenizer.from_pretrained loads it")
    train.add_argument("--kind", choices=("wordpiece", "sentencepiece"), default="wordpiece",
                       help="wordpiece: ELECTRA and BERT; sentencepiece: ALBERT's unigram model")
    train.add_argument("--vocab-size", type=int, default=30522, help="tokens in the vocabulary, special ones included")
    train.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=False,
                       help="lowercase the text before training and encoding")
    train.add_argument("--strip-accents", action=argparse.BooleanOptionalAction, default=False,
                       help="independent of --lowercase; off keeps å, ø, ñ, á")
    train.add_argument("--limit-alphabet", type=int, help="WordPiece: keep only this many distinct characters")
    train.add_argument("--unused", type=int, default=0, help="reserve N [unusedI] tokens after the special ones")
    train.add_argument("--min-frequency", type=int, default=2, help="WordPiece: the least count of a merged pair")
    train.add_argument("--character-coverage", type=float, default=1.0,
                       help="SentencePiece: share of characters covered (0.9995 suits Korean, Chinese, Japanese)")
    train.add_argument("--max-lines", type=int, default=0, help="train on at most N lines (0: all)")
    train.set_defaults(run=_tokenizer_train)

    prep = commands.add_parser("prepare", help="tokenize and pack a corpus into ArrayRecord shards for pretraining "
                                               "(streaming, parallel, deterministic)")
    _add_source_options(prep)
    prep.add_argument("--tokenizer", required=True, help="a folder from `electra-jax tokenizer train`")
    prep.add_argument("--out", required=True, help="a new (or empty) folder for the shards and metadata.json")
    prep.add_argument("--seq-len", type=int, default=128, help="tokens per example, [CLS] and [SEP]s included")
    prep.add_argument("--format", choices=("electra", "albert"), default="electra",
                      help="electra: packed segments; albert: sentence pairs for sentence-order prediction")
    prep.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1),
                      help="tokenizing processes (0: in this process); the output does not depend on it")
    prep.add_argument("--seed", type=int, default=0, help="seeds the short-target and segment-split choices")
    prep.add_argument("--short-seq-prob", type=float, help="share of shorter random targets (default: electra "
                                                           "0.05, albert 0.1)")
    prep.add_argument("--single-segment-prob", type=float, default=0.1, help="electra: share of one-segment examples")
    prep.add_argument("--blank-lines-separate-docs", action=argparse.BooleanOptionalAction, default=True,
                      help="a blank line ends a document (segments never cross documents)")
    prep.add_argument("--examples-per-shard", type=int, default=10_000, help="examples per ArrayRecord shard")
    prep.add_argument("--eval-fraction", type=float, default=0.0,
                      help="share of whole documents held out in eval-* shards for pretraining's held-out evaluation "
                           "(chosen by a hash of each document's text; the train shards never hold them)")
    prep.add_argument("--no-progress", action="store_true", help="no progress bar")
    prep.set_defaults(run=_prepare)
    fine = commands.add_parser("finetune", help="fine-tune for NER, POS tagging, sentence (pair) classification or "
                                                "regression, or extractive QA; writes results and the best model as "
                                                "an HF …ForTokenClassification, …ForSequenceClassification or "
                                                "…ForQuestionAnswering")
    fine.add_argument("--task", choices=TASK_NAMES, required=True,
                      help="regression: sentence pairs with a number (STS-B, KorSTS), scored by Spearman and "
                           "Pearson; qa: extractive question answering (SQuAD v1.1/v2.0, KorQuAD), EM and F1")
    fine.add_argument("--train", required=True, help="ner/pos: CoNLL-style columns (token, tags; tab or space) or "
                                                     "CoNLL-U; classify/regression: CSV, TSV (with a header row) or "
                                                     "JSONL; qa: SQuAD JSON")
    fine.add_argument("--dev", help="the dev split (model selection); or hold part of --train out with "
                                    "--dev-fraction")
    fine.add_argument("--dev-fraction", type=float, help="without --dev: hold out this share of the training "
                                                         "examples (a fixed random split) as dev")
    fine.add_argument("--test", help="the test split, scored with the dev-selected model of every seed")
    fine.add_argument("--init", required=True, help="a pretraining or distillation run directory, or a Hugging "
                                                    "Face ELECTRA, ALBERT or BERT folder")
    fine.add_argument("--out", required=True, help="a new (or empty) folder: results.json, results.md, hf/")
    fine.add_argument("--seeds", type=int, default=1, help="fine-tuning runs (seeds 0 .. N-1), summarised as "
                                                            "mean +- sd")
    fine.add_argument("--epochs", type=int, default=3, help="passes over --train; the best epoch on dev is kept")
    fine.add_argument("--learning-rate", type=float, help="peak learning rate (default: from the model's hidden "
                                                          "size, as the ELECTRA paper's table: " + SIZE_TABLE + ")")
    fine.add_argument("--batch-size", type=int, default=32, help="examples (token tasks: windows) per step")
    fine.add_argument("--layerwise-decay", type=float, help="head lr, top layer lr*d, ... embeddings lr*d^(layers+1) "
                                                            "(default: 0.9 from hidden size 1024 up, else 0.8)")
    fine.add_argument("--seq-len", type=int, default=128, help="longer sentences are split into several windows")
    fine.add_argument("--tag-column", type=int, default=1, help="0-based column of the tag in CoNLL-style files "
                                                                "(GermEval 2014's outer tags: 2)")
    fine.add_argument("--token-column", type=int, default=0, help="0-based column of the token (GermEval 2014, "
                                                                  "with its index column first: 1)")
    fine.add_argument("--tag-scheme", choices=SCHEMES, default="iob2",
                      help="ner: the files' tags, read as IOB2: iob2 (B-X, I-X; bare IO types too), iob1, bioes "
                           "(BILOU too) or suffix (X-B, X-I, as Naver NER)")
    fine.add_argument("--drop-tags", default="", metavar="TYPE[,TYPE...]",
                      help="ner: entity types trained and scored as O (e.g. MISC: DaNE without MISC; default: none)")
    fine.add_argument("--outside-tag", default="O", help="ner: the tag of words outside entities (e.g. 0); bare "
                                                         "entity tags (IO: PER on every word) are read as IOB2")
    fine.add_argument("--skip-malformed", action="store_true", help="ner/pos: leave out (and count) lines without "
                                                                    "the tag column instead of stopping")
    fine.add_argument("--text-field", default="text", help="classify/regression: the field (column) holding the "
                                                           "sentence")
    fine.add_argument("--pair-field", help="classify/regression: the field holding the second sentence of a pair")
    fine.add_argument("--label-field", default="label", help="classify/regression: the field holding the label "
                                                             "(regression: a number)")
    fine.add_argument("--doc-stride", type=int, help="qa: tokens shared by consecutive windows of a long context "
                                                     "(default: 128, or half a window's context where that is less)")
    fine.add_argument("--max-query-length", type=int, default=64, help="qa: question tokens kept")
    fine.add_argument("--max-answer-length", type=int, default=30, help="qa: tokens in the longest answer")
    fine.add_argument("--random-init", action="store_true", help="the --init model's architecture and tokenizer "
                                                                 "with fresh parameters (a baseline)")
    fine.set_defaults(run=_finetune, runs_steps=True)

    pred = commands.add_parser("predict", help="run a fine-tuned model over a file: the answers in the layout "
                                                "finetune's predictions files have, and examples/s and tokens/s")
    pred.add_argument("--model", required=True, help="the hf/ folder finetune wrote (or its FT_OUT folder)")
    pred.add_argument("--input", required=True, help="ner/pos: tokens in CoNLL columns (tags, if any, ignored) or "
                                                     "CoNLL-U; classify/regression: CSV, TSV or JSONL; qa: SQuAD JSON")
    pred.add_argument("--output", help="where the predictions go (default: standard output; the timing then goes "
                                       "to standard error)")
    pred.add_argument("--task", choices=tuple(TASK_NAMES), help="default: the task the model was fine-tuned for")
    pred.add_argument("--batch-size", type=int, default=64, help="windows per step")
    pred.add_argument("--seq-len", type=int, help="default, as for every option below: the fine-tuning's")
    pred.add_argument("--token-column", type=int, help="ner/pos: 0-based column of the token")
    pred.add_argument("--tag-scheme", choices=SCHEMES, help="ner: the scheme the tags are written in")
    pred.add_argument("--outside-tag", help="ner: the tag written for words outside entities")
    pred.add_argument("--text-field", help="classify/regression: the field holding the sentence")
    pred.add_argument("--pair-field", help="classify/regression: the field holding the second sentence")
    pred.add_argument("--doc-stride", type=int, help="qa: tokens shared by consecutive windows")
    pred.add_argument("--max-query-length", type=int, help="qa: question tokens kept")
    pred.add_argument("--max-answer-length", type=int, help="qa: tokens in the longest answer")
    pred.set_defaults(run=_predict, runs_steps=True)
    return parser


DEBUG_ENV = "ELECTRA_JAX_DEBUG"  # =1: the full traceback of an expected error too, as --debug
# Errors the user can fix (bad config, input, paths): one line, exit code 2. Anything else is a bug and keeps
# its traceback.
EXPECTED_ERRORS = (ConfigError, FileNotFoundError, FileExistsError, ValueError)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    argv = [a for a in argv if a != "--debug"]  # accepted anywhere on the line
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    # argparse fills a trailing positional list only where the positionals stand: section.key=value given after
    # options that follow other positionals (import SOURCE OUT --cased train.steps=9) arrives here.
    overrides = [a for a in unknown if "=" in a and not a.startswith("-")]
    if unknown != overrides or (overrides and not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    if getattr(args, "runs_steps", False):
        keep_freed_memory()  # before JAX starts its threads; only commands that run XLA steps gain from it
    try:
        return args.run(args)
    except EXPECTED_ERRORS as err:
        return _report(err, debug)
    except OSError as err:  # not found / exists are above: a full disk, no permission, a read-only mount
        from electra_jax.storage import STORAGE_ERRNOS, storage_problem
        if err.errno not in STORAGE_ERRNOS:
            raise
        return _report(storage_problem(err, args.command), debug)
    except KeyboardInterrupt:
        print("\ninterrupted: stopped without saving (the newest finished checkpoint stays)", file=sys.stderr)
        return 130


def _report(err: BaseException, debug: bool) -> int:
    if debug:
        traceback.print_exception(err)
    print(f"error: {err}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
