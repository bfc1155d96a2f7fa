"""`electra-jax <command> [options] [section.key=value ...]`."""
from __future__ import annotations

import argparse
import sys

from electra_jax.config import ConfigError


def _pretrain(args) -> int:
    from electra_jax.config import load_config
    config = load_config(args.config, args.overrides)  # config errors before jax is even imported
    from electra_jax.train import NonFiniteLossError, pretrain
    try:
        summary = pretrain(config, args.run_dir, progress=not args.no_progress)
    except NonFiniteLossError as err:
        print(f"error: {err}", file=sys.stderr)
        return 3
    final = summary["final"]
    if final:
        print(f"step {summary['end_step']}: loss {final['loss']:.4f}, generator loss {final['generator_loss']:.4f}, "
              f"discriminator accuracy {final['discriminator_accuracy']:.4f}, replaced-token F1 "
              f"{final['replaced_f1']:.4f}")
    print(f"checkpoints: {summary['checkpoints']}")
    print(f"metrics:     {summary['metrics']}")
    print(f"tensorboard: {summary['tensorboard']}")
    print(f"plot:        {summary['plot']}")
    return 0


def _tokenizer_train(args) -> int:
    from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
    tokenizer = train_wordpiece(args.input, args.vocab_size, lowercase=args.lowercase,
                                strip_accents=args.strip_accents, min_frequency=args.min_frequency)
    path = save_tokenizer(tokenizer, args.out, lowercase=args.lowercase)
    print(f"vocabulary of {tokenizer.get_vocab_size()} tokens written to {path}")
    return 0


def _export(args) -> int:
    from electra_jax.hf.export import export
    export(args.source, args.out_dir, step=args.step)
    return 0


def _import(args) -> int:
    from electra_jax.hf.importer import import_hf
    import_hf(args.hf_dir, args.out_dir, generator=args.generator, base_config=args.config)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="electra-jax", description="Pretrain ELECTRA-family encoders in JAX.")
    commands = parser.add_subparsers(dest="command", required=True)

    pre = commands.add_parser("pretrain", help="pretrain an ELECTRA generator + discriminator (resumes if the "
                                               "run directory has checkpoints)")
    pre.add_argument("--config", required=True, help="YAML preset, e.g. configs/electra_smoke.yaml")
    pre.add_argument("--run-dir", default="runs/smoke", help="checkpoints, metrics, plot and resolved config")
    pre.add_argument("--no-progress", action="store_true", help="no progress bar")
    pre.add_argument("overrides", nargs="*", metavar="section.key=value", help="e.g. train.steps=1000")
    pre.set_defaults(run=_pretrain)

    exp = commands.add_parser("export", help="write a run's checkpoint as Hugging Face PyTorch models "
                                             "(OUT_DIR/discriminator and OUT_DIR/generator)")
    exp.add_argument("source", metavar="RUN_DIR_OR_CHECKPOINT", help="a run directory or one of its checkpoints")
    exp.add_argument("out_dir", metavar="OUT_DIR", help="a new (or empty) folder")
    exp.add_argument("--step", type=int, help="which checkpoint (default: the newest finished one)")
    exp.set_defaults(run=_export)

    imp = commands.add_parser("import", help="turn Hugging Face ELECTRA weights into a run directory that "
                                             "pretrain continues and fine-tuning starts from")
    imp.add_argument("hf_dir", metavar="HF_DIR", help="an ElectraForPreTraining / ElectraForMaskedLM / ElectraModel "
                                                      "folder, or a folder with discriminator/ and generator/")
    imp.add_argument("out_dir", metavar="OUT_DIR", help="the new run directory")
    imp.add_argument("--generator", help="an ElectraForMaskedLM folder to pair with HF_DIR's discriminator")
    imp.add_argument("--config", help="preset for everything but the model (default: the package defaults)")
    imp.set_defaults(run=_import)

    tok = commands.add_parser("tokenizer", help="tokenizer tools")
    tok_commands = tok.add_subparsers(dest="tokenizer_command", required=True)
    train = tok_commands.add_parser("train", help="train a WordPiece vocabulary on text files")
    train.add_argument("--input", nargs="+", required=True, help="UTF-8 text files, one paragraph per line")
    train.add_argument("--out", required=True, help="output folder (tokenizer.json, vocab.txt)")
    train.add_argument("--vocab-size", type=int, default=30522)
    train.add_argument("--min-frequency", type=int, default=2)
    train.add_argument("--lowercase", action=argparse.BooleanOptionalAction, default=False)
    train.add_argument("--strip-accents", action=argparse.BooleanOptionalAction, default=False)
    train.set_defaults(run=_tokenizer_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (ConfigError, FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
