"""What every recipe shares: the two scales, the steps as printed commands, and the seed card's snippet at the end.

A recipe is a list of steps, each either an `electra-jax` command or a small file operation (a corpus cap, a
fixed-seed split) done here. `--scale cpu` runs them one after the other into --out on the shared text, each
printed before it runs; a step whose output is already there is skipped, so the same command again goes on
where it stopped (pretraining resumes from its newest checkpoint). `--scale tpu` prints the full-size commands
(the seed's own sizes, steps, batch, vocabulary and schedule), pretraining and distillation under
`launch/tpu.sh babysit`; `--run` runs them. The last step runs the seed model card's own usage snippet against
the recipe's model, as a user of the published model would.
"""
from __future__ import annotations

import argparse
import json
import random
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data"
RAW_TEXT = SHARED / "raw_text"


@dataclass(frozen=True)
class Step:
    """One `electra-jax` command (argv after the program name), a shell command at TPU scale (`shell`), or a
    file operation done here (`action`); skipped when `done` (a path) exists."""
    what: str
    argv: tuple[str, ...] = ()
    done: Path | None = None
    action: Callable[[], None] | None = None
    shell: bool = False

    def printed(self) -> str:
        if self.action is not None:
            return f"# {self.what} (done by the recipe)"
        if self.shell:
            return shlex.join(self.argv)
        return shlex.join(("electra-jax", *self.argv))


@dataclass(frozen=True)
class Recipe:
    """A seed model's recipe: `cpu(args, out)` and `tpu(args, out)` give its steps; `model(out)` is the folder
    the card's snippet loads (MODEL in it); `results(out)` the fine-tuning folders whose scores are summarised."""
    name: str
    seed: str
    cpu: Callable[[argparse.Namespace, Path], list[Step]]
    tpu: Callable[[argparse.Namespace, Path], list[Step]]
    model: Callable[[Path], Path]
    results: Callable[[Path], dict[str, Path]]
    snippet: str
    corpus: tuple[Path, ...]
    cpu_steps: int
    needs: tuple[Path, ...] = field(default=())
    options: Callable[[argparse.ArgumentParser], None] | None = None  # the recipe's own flags


def parser(recipe: Recipe) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"recipes/{recipe.name}.py", description=f"{recipe.seed}, end to end",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--scale", choices=("cpu", "tpu"), default="cpu",
                   help="cpu: run it here on the shared text (minutes on 2 cores); tpu: print the full-size commands")
    p.add_argument("--out", type=Path, default=REPO / "runs" / "recipes" / recipe.name,
                   help="the recipe's folder (cpu: its runs; tpu: the local work folder of the printed commands)")
    p.add_argument("--corpus", nargs="+", default=None,
                   help="pretraining text (cpu default: the shared text; tpu: your full corpus, required)")
    p.add_argument("--steps", type=int, default=recipe.cpu_steps, help="cpu: pretraining steps")
    p.add_argument("--epochs", type=int, default=3, help="cpu: fine-tuning epochs")
    p.add_argument("--seeds", type=int, default=1, help="cpu: fine-tuning seeds")
    p.add_argument("--max-sentences", type=int, default=0,
                   help="cpu: fine-tune on at most this many training sentences (0: all), for a quick run")
    p.add_argument("--no-snippet", action="store_true", help="leave out the model card's snippet")
    if recipe.options is not None:
        recipe.options(p)
    tpu = p.add_argument_group("tpu scale")
    tpu.add_argument("--bucket", default="gs://YOUR-BUCKET", help="gs://BUCKET: prepared data and run directories")
    tpu.add_argument("--tpu-name", default=recipe.name.replace("_", "-"), help="the TPU VM's name")
    tpu.add_argument("--zone", default="europe-west4-a")
    tpu.add_argument("--type", default="v3-8", help="accelerator type")
    tpu.add_argument("--run", action="store_true", help="run the printed commands (needs gcloud), not just print them")
    return p


def electra_jax(*argv: str) -> list[str]:
    return [sys.executable, "-m", "electra_jax", *argv]


def run_steps(steps: list[Step], log: Callable[[str], None] = print) -> None:
    for step in steps:
        if step.done is not None and step.done.exists():
            log(f"# {step.what}: already done ({step.done})")
            continue
        log(f"\n# {step.what}\n{step.printed()}")
        if step.action is not None:
            step.action()
            continue
        command = list(step.argv) if step.shell else electra_jax(*step.argv)
        code = subprocess.run(command, cwd=REPO).returncode
        if code != 0:
            sys.exit(f"{step.what} failed (exit {code}); fix what it printed and run the recipe again: finished "
                     "steps are skipped")


def run_snippet(snippet: str, model_dir: Path) -> str:
    """The model card's snippet with MODEL set to our folder, in a fresh interpreter (as a user would run it)."""
    try:
        import transformers  # noqa: F401 - only to say early what is missing
    except ImportError:
        sys.exit("the model card's snippet needs transformers and torch: pip install -e '.[test]' "
                 "(or pass --no-snippet)")
    code = f"MODEL = {str(model_dir)!r}\n" + snippet
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"the model card's snippet failed on {model_dir}:\n{result.stderr[-3000:]}")
    return result.stdout


def summary(recipe: Recipe, out: Path) -> dict:
    """Each fine-tuning's dev and test score (mean over seeds), from its results.json."""
    scores = {}
    for task, folder in recipe.results(out).items():
        results = json.loads((folder / "results.json").read_text())
        scores[task] = {"metric": results.get("metric"), "dev": results["dev"]["mean"],
                        "test": (results.get("test") or {}).get("mean")}
    return scores


def main(recipe: Recipe, argv: list[str] | None = None) -> int:
    args = parser(recipe).parse_args(argv)
    out = args.out.resolve()
    if args.scale == "tpu":
        if args.corpus is None and args.run:
            sys.exit("--scale tpu --run: give --corpus (the full pretraining text; the shared text is for --scale cpu)")
        steps = recipe.tpu(args, out)
        print(f"# {recipe.seed} at full size: run these in order (--run runs them)")
        for step in steps:
            print(f"\n# {step.what}\n{step.printed()}")
        if args.run:
            run_steps(steps)
        return 0
    missing = [str(p) for p in (*recipe.corpus, *recipe.needs) if not p.exists()]
    if args.corpus is None and missing:
        sys.exit(f"--scale cpu needs the shared data ({', '.join(missing)} missing): run from the project's "
                 "checkout beside ../shared, or give --corpus and the task files")
    out.mkdir(parents=True, exist_ok=True)
    run_steps(recipe.cpu(args, out))
    scores = summary(recipe, out)
    (out / "scores.json").write_text(json.dumps(scores, indent=2) + "\n")
    for task, score in scores.items():
        test = f", test {score['test']:.4f}" if score["test"] is not None else ""
        print(f"{recipe.name} {task}: dev {score['metric']} {score['dev']:.4f}{test}")
    if not args.no_snippet:
        model = recipe.model(out)
        print(f"\n# the model card's snippet, MODEL = {model}")
        print(run_snippet(recipe.snippet, model), end="")
    return 0


# --- file operations the recipes share ------------------------------------------------------------------------

def sentence_blocks(path: Path) -> list[list[str]]:
    """A CoNLL-style file's sentences as blocks of lines (comment lines kept with their sentence)."""
    blocks, block = [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    if block:
        blocks.append(block)
    return blocks


def write_blocks(blocks: list[list[str]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join("\n".join(b) + "\n\n" for b in blocks), encoding="utf-8")
    tmp.replace(path)


PARAGRAPHS_PER_DOCUMENT = 20  # the shared files have no blank lines: documents of 20 paragraphs, in file order


def documents(sources: list[Path], out: Path) -> Step:
    """The shared text as one file of documents (blank-line separated), so that held-out evaluation can keep
    whole documents out of training and ALBERT's sentence pairs stay inside one."""
    def write() -> None:
        docs = []
        for source in sources:
            lines = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
            docs += ["\n".join(lines[i:i + PARAGRAPHS_PER_DOCUMENT]) for i in range(0, len(lines), PARAGRAPHS_PER_DOCUMENT)]
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text("\n\n".join(docs) + "\n", encoding="utf-8")
        tmp.replace(out)
    return Step(f"{' + '.join(s.name for s in sources)} as documents of {PARAGRAPHS_PER_DOCUMENT} paragraphs",
                done=out, action=write)


def corpus_step(args, sources: tuple[Path, ...], out: Path) -> tuple[list[str], list[Step]]:
    """The pretraining text: --corpus as given, or the shared files as documents in out/corpus.txt."""
    if args.corpus:
        return list(args.corpus), []
    return [str(out / "corpus.txt")], [documents(list(sources), out / "corpus.txt")]


def block_tags(block: list[str], tag_column: int) -> set[str]:
    rows = [line.split("\t") if "\t" in line else line.split() for line in block if not line.startswith("#")]
    return {row[tag_column] for row in rows if len(row) > tag_column}


def first_sentences(blocks: list[list[str]], n: int, tag_column: int) -> list[list[str]]:
    """The first n sentences, and after them the first sentence holding each tag they lack (a dev or test file
    with a tag the training data never shows is refused by finetune)."""
    kept, seen = blocks[:n], set().union(*(block_tags(b, tag_column) for b in blocks[:n]))
    for block in blocks[n:]:
        if block_tags(block, tag_column) - seen:
            kept.append(block)
            seen |= block_tags(block, tag_column)
    return kept


def capped(source: Path, out: Path, max_sentences: int, tag_column: int = 1) -> tuple[Path, Step | None]:
    """The training file to fine-tune on: `source`, or its first `max_sentences` sentences (and one sentence for
    each tag they lack) written to `out`."""
    if not max_sentences:
        return source, None
    return out, Step(f"the first {max_sentences} sentences of {source.name}, and one for each tag they lack",
                     done=out, action=lambda: write_blocks(first_sentences(sentence_blocks(source), max_sentences,
                                                                           tag_column), out))


def split_three(sources: list[Path], folder: Path, seed: int = 0, dev: float = 0.1, test: float = 0.1,
                tag_column: int = 1) -> Step:
    """train/dev/test files from the sentences of `sources`, shuffled with a fixed seed (KLUE's dev set, or
    GermEval's dev and test pooled, as all three). A dev or test sentence with a tag the training split lacks
    moves to it: finetune refuses a label it never trained on."""
    def split() -> None:
        blocks = [b for source in sources for b in sentence_blocks(source)
                  if any(not line.startswith("## ") for line in b)]
        random.Random(seed).shuffle(blocks)
        n_dev, n_test = round(len(blocks) * dev), round(len(blocks) * test)
        parts = {"dev": blocks[:n_dev], "test": blocks[n_dev:n_dev + n_test], "train": blocks[n_dev + n_test:]}
        seen = set().union(*(block_tags(b, tag_column) for b in parts["train"]))
        for name in ("dev", "test"):
            unseen = [b for b in parts[name] if block_tags(b, tag_column) - seen]
            parts[name] = [b for b in parts[name] if not block_tags(b, tag_column) - seen]
            parts["train"] += unseen
            seen = seen.union(*(block_tags(b, tag_column) for b in unseen))
        for name, part in parts.items():
            write_blocks(part, folder / f"{name}.tsv")
    names = " + ".join(source.name for source in sources)
    return Step(f"{names} split {1 - dev - test:.0%}/{dev:.0%}/{test:.0%} into train/dev/test (seed {seed})",
                done=folder / "train.tsv", action=split)


def finetune(task: str, init: Path, out: Path, args: argparse.Namespace, train: Path, *extra: str) -> Step:
    return Step(f"fine-tune {task.upper()} on {train.name}", ("finetune", "--task", task, "--init", str(init),
                "--train", str(train), "--out", str(out), "--seeds", str(args.seeds), "--epochs", str(args.epochs),
                *extra), done=out / "results.json")


def tokenizer(corpus: list[str], out: Path, *options: str) -> Step:
    return Step("the vocabulary", ("tokenizer", "train", "--input", *corpus, "--out", str(out), *options),
                done=out / "tokenizer_config.json")


def prepare(corpus: list[str], tok: Path, out: Path, *options: str) -> Step:
    return Step("the pretraining shards", ("prepare", "--input", *corpus, "--tokenizer", str(tok), "--out",
                str(out), "--no-progress", *options), done=out / "metadata.json")


def cpu_training(steps: int, warmup: int = 500) -> list[str]:
    """Overrides that shorten a CPU preset to `steps`: warmup a tenth of them (at most the preset's), held-out
    evaluation four times, a checkpoint every quarter (the last step is always saved)."""
    quarter = max(1, steps // 4)
    return [f"train.steps={steps}", f"schedule.warmup_steps={max(1, min(warmup, steps // 10))}",
            f"train.eval_every={quarter}", f"checkpoint.every_steps={quarter}"]


def export(run: Path, out: Path) -> Step:
    return Step("the Hugging Face folders", ("export", str(run), str(out)), done=out)


# --- the TPU scale: full-size commands through launch/tpu.sh ---------------------------------------------------

def tpu_vm(args: argparse.Namespace, run_id: str, run_dir: str, *command_args: str,
           command: str = "pretrain") -> list[Step]:
    """Create a VM, install this checkout, keep the run going through preemptions, delete the VM."""
    vm = ("--name", args.tpu_name, "--zone", args.zone)
    launch = str(REPO / "launch" / "tpu.sh")
    return [
        Step("a spot TPU VM", (launch, "create", *vm, "--type", args.type, "--spot"), shell=True),
        Step("this checkout on every worker", (launch, "setup", *vm, "--gcsfuse"), shell=True),
        Step(f"{command} on the TPU, resumed after every preemption until it finishes",
             (launch, "babysit", *vm, "--type", args.type, "--spot", "--gcsfuse", "--command", command,
              "--run-id", run_id, "--run-dir", run_dir, "--", *command_args), shell=True),
        Step("the VM deleted (the run directory stays in the bucket)", (launch, "delete", *vm), shell=True),
    ]


def copy_down(source: str, dest: Path) -> Step:
    return Step(f"{source} copied here", ("gcloud", "storage", "cp", "-r", source, str(dest)), shell=True, done=dest)


def copy_up(source: Path, dest: str) -> Step:
    return Step(f"{source.name} copied to the bucket", ("gcloud", "storage", "cp", "-r", str(source), dest), shell=True)
