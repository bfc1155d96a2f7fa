"""`electra-jax finetune --task ner|pos|classify`: a task head on a pretraining run (or an HF folder), AdamW
with warmup + linear decay and layerwise learning-rate decay, dev-based model selection, several seeds
summarised as mean +- sd, and the best model written as an HF `…ForTokenClassification` or
`…ForSequenceClassification`.
"""
from __future__ import annotations

import dataclasses
import json
import statistics
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from electra_jax.config import ScheduleConfig
from electra_jax.finetune.data import FinetuneDataError
from electra_jax.families import family_of
from electra_jax.finetune.model import HEAD_NAMES
from electra_jax.finetune.qa import context_room, qa_stride
from electra_jax.finetune.schemes import SCHEMES
from electra_jax.finetune.sizes import size_defaults
from electra_jax.finetune.tasks import TASKS
from electra_jax.storage import refuse_nonempty, write_atomic
from electra_jax.optim import decay_mask, layerwise_multipliers, make_schedule, scale_by_multipliers

@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    task: str = "ner"
    seeds: int = 1
    epochs: int = 3
    learning_rate: float | None = None  # None: from the model's size (sizes.py), as is layerwise_decay
    batch_size: int = 32
    layerwise_decay: float | None = None
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    seq_len: int = 128
    tag_column: int = 1  # token tasks: 0-based columns of the tag and the token in CoNLL-style files
    token_column: int = 0
    tag_scheme: str = "iob2"  # ner: the tags' scheme in the files (schemes.SCHEMES), read as IOB2
    drop_tags: tuple[str, ...] = ()  # ner: entity types trained and scored as O (DaNE "without MISC")
    doc_stride: int | None = None  # qa: tokens shared by consecutive windows of a context (None: qa_stride)
    max_query_length: int = 64  # qa: question tokens kept
    max_answer_length: int = 30  # qa: tokens in the longest answer
    text_field: str = "text"  # classify: the CSV/TSV/JSONL fields
    pair_field: str | None = None
    label_field: str = "label"
    random_init: bool = False  # the run's architecture and tokenizer, fresh parameters (a baseline)
    dev_fraction: float = 0.0  # without a dev file: this share of the training examples, held out
    outside_tag: str = "O"  # NER: the tag of words outside entities (the Swedish Webbnyheter corpus writes 0)
    skip_malformed: bool = False  # token tasks: leave out (and count) lines without the tag column


def load_init(init: str | Path, out_dir: Path, log):
    """(config, pretrained params, tokenizer folder) from a run directory or, imported first, an HF folder."""
    from electra_jax.run_dir import load_run_params
    init = Path(init)
    if not (init / "config.yaml").is_file():
        from electra_jax.hf.importer import import_hf
        import_hf(init, out_dir / "init", log=log)
        init = out_dir / "init"
    from electra_jax.families import family_of
    config, params, step = load_run_params(init, None)
    log(f"initialising from {init} ({config.model.architecture}, step {step})")
    if config.model.attention in ("cudnn", "splash"):  # kernels of the pretraining platform only
        log(f"fine-tuning computes attention with model.attention=einsum (the run used {config.model.attention}, "
            f"which runs on one kind of accelerator only)")
        config = dataclasses.replace(config, model=dataclasses.replace(config.model, attention="einsum"))
    return config, family_of(config.model).body_params(config, params), init / "tokenizer"


def _check_options(options: FinetuneOptions) -> None:
    if options.task not in TASKS:
        raise FinetuneDataError(f"finetune: --task must be one of {', '.join(TASKS)}, got {options.task!r}")
    if options.seeds < 1 or options.epochs < 1 or options.batch_size < 1 or options.seq_len < 8:
        raise FinetuneDataError("finetune: --seeds, --epochs and --batch-size must be at least 1 and --seq-len at "
                                "least 8")
    if options.learning_rate is not None and not options.learning_rate > 0:
        raise FinetuneDataError(f"finetune: --learning-rate must be positive, got {options.learning_rate}")
    if options.layerwise_decay is not None and not 0.0 < options.layerwise_decay <= 1.0:
        raise FinetuneDataError(f"finetune: --layerwise-decay must be in (0, 1], got {options.layerwise_decay}")
    if options.tag_scheme not in SCHEMES:
        raise FinetuneDataError(f"finetune: --tag-scheme must be one of {', '.join(SCHEMES)}, got "
                                f"{options.tag_scheme!r}")
    if min(options.tag_column, options.token_column) < 0 or options.tag_column == options.token_column:
        raise FinetuneDataError(f"finetune: --token-column {options.token_column} and --tag-column "
                                f"{options.tag_column} must be two different 0-based columns")
    if options.task == "qa":
        room = context_room(options.seq_len, options.max_query_length)
        if options.max_query_length < 1 or options.max_answer_length < 1:
            raise FinetuneDataError(f"finetune: --max-query-length and --max-answer-length must be at least 1, got "
                                    f"{options.max_query_length} and {options.max_answer_length}")
        if room < 8:
            raise FinetuneDataError(f"finetune: --seq-len {options.seq_len} leaves {room} context tokens beside "
                                    f"--max-query-length {options.max_query_length} question tokens; raise --seq-len "
                                    f"(384 is usual for QA) or lower --max-query-length")
        if options.doc_stride is not None and not 0 <= options.doc_stride < room:
            raise FinetuneDataError(f"finetune: --doc-stride {options.doc_stride} must be below the {room} context "
                                    f"tokens a window holds (--seq-len {options.seq_len} minus "
                                    f"--max-query-length {options.max_query_length} and 3 special tokens)")
    if options.dev_fraction and not 0.0 < options.dev_fraction <= 0.5:
        raise FinetuneDataError(f"finetune: --dev-fraction must be in (0, 0.5], got {options.dev_fraction}")


def hold_out(items: list, fraction: float) -> tuple[list, list]:
    """(train, dev): a fixed random `fraction` of the examples as dev, both in file order. The same split for
    every seed and run, so dev scores compare."""
    order = np.random.default_rng(0).permutation(len(items))
    size = max(1, round(len(items) * fraction))
    if size >= len(items):
        raise FinetuneDataError(f"finetune: --dev-fraction {fraction} of {len(items)} training examples leaves "
                                f"none to train on")
    dev = set(order[:size].tolist())
    return [x for i, x in enumerate(items) if i not in dev], [x for i, x in enumerate(items) if i in dev]


def finetune(train: str, dev: str | None, init: str, out_dir: str | Path, test: str | None = None,
             options: FinetuneOptions = FinetuneOptions(), log=print) -> dict:
    """`dev` None: `options.dev_fraction` of the training examples are held out as dev."""
    from electra_jax.data.text_tokenizer import load_text_tokenizer
    _check_options(options)
    if (dev is None) == (not options.dev_fraction):
        raise FinetuneDataError("finetune: give either --dev FILE or --dev-fraction F (a share of --train held out)")
    task = TASKS[options.task]
    if options.task == "qa" and options.doc_stride is None:
        options = dataclasses.replace(options, doc_stride=qa_stride(options.seq_len, options.max_query_length))
    out_dir = Path(out_dir)
    refuse_nonempty(out_dir, "finetune")
    paths = {"train": train, **({"dev": dev} if dev else {}), **({"test": test} if test else {})}
    splits = {name: task.read(path, options, training=name == "train") for name, path in paths.items()}
    items = {name: split[0] for name, split in splits.items()}
    labels = task.labels(items["train"])  # before a hold-out, so that dev has no label the head lacks
    if dev is None:
        items["train"], items["dev"] = hold_out(items["train"], options.dev_fraction)
        splits["dev"] = (items["dev"], f"held out from {Path(train).name} (--dev-fraction {options.dev_fraction:g})")
        items = {name: items[name] for name in ("train", "dev", "test") if name in items}
    for name in ("dev", "test"):
        if name in items:
            task.check(items[name], labels, paths.get(name, train))
    out_dir.mkdir(parents=True)
    config, pretrained, tokenizer_dir = load_init(init, out_dir, log)
    if options.seq_len > config.model.max_position_embeddings:
        raise FinetuneDataError(f"finetune: --seq-len {options.seq_len} exceeds the model's "
                                f"{config.model.max_position_embeddings} positions")
    options = _fit_to_size(options, config.model, log)
    tokenizer = load_text_tokenizer(tokenizer_dir)
    label_ids = {label: i for i, label in enumerate(labels)}
    encoded = {name: task.encode(split, tokenizer, label_ids, options) for name, split in items.items()}
    notes = {name: split[1] for name, split in splits.items()}
    log(f"{options.task}: " + (f"{len(labels)} labels; " if task.named_labels else "") + "; ".join(
        f"{name} {task.describe(items[name], encoded[name])}" + (f", {notes[name]}" if notes[name] else "")
        for name in encoded))
    model = family_of(config.model).classifier(config.model, len(labels), task.per_token)
    pad = tokenizer.specials.pad
    predict = predict_step(model, task, pad)

    def evaluate(params, name, tuned=None):
        return task.score(items[name], encoded[name], _predictions(predict, params, encoded[name]), labels, tuned)

    runs = []
    for seed in range(options.seeds):
        start = time.perf_counter()
        params, dev_scores, epoch = _train_one(model, pretrained, encoded["train"], evaluate, task, options, seed,
                                               pad, log)
        result = {"seed": seed, "best_epoch": epoch, "dev": dev_scores, "seconds": time.perf_counter() - start}
        if "test" in encoded:
            result["test"] = evaluate(params, "test", tuned=dev_scores)
        runs.append((result, params))
        log(f"seed {seed}: dev {task.metric} {dev_scores[task.metric]:.4f}"
            + (f", test {result['test'][task.metric]:.4f}" if "test" in result else "")
            + f" ({result['seconds']:.0f} s)")
    summary = _summary([r for r, _ in runs], task, options, labels, notes, init)
    summary["parameters"] = int(sum(leaf.size for leaf in jax.tree.leaves(runs[0][1])))
    best_result, best_params = max(runs, key=lambda run: run[0]["dev"][task.metric])
    # The best model's predictions, in the layout `electra-jax predict` writes, and the time the test set takes
    # (the predict step is compiled by then: dev was scored with it).
    for name in ("dev", "test"):
        if name in encoded:
            start = time.perf_counter()
            predicted = _predictions(predict, best_params, encoded[name])
            seconds = time.perf_counter() - start
            if name == "test":
                summary["test_inference"] = {"seconds": seconds, "examples_per_second": len(items[name]) / seconds}
            text = task.write_predictions(items[name], encoded[name], predicted, labels, options, best_result["dev"])
            write_atomic(out_dir / f"predictions-{name}{task.prediction_suffix}", text)
    write_atomic(out_dir / "results.json", json.dumps(summary, indent=2) + "\n")
    write_atomic(out_dir / "results.md", results_table(summary))
    from electra_jax.finetune.export import export_classifier
    architecture = export_classifier(model, best_params, labels, tokenizer_dir, out_dir / "hf", task.head,
                                     task.problem_type, finetune_settings(options, best_result["dev"]))
    log(f"results: {out_dir / 'results.json'}, {out_dir / 'results.md'}; predictions: {out_dir}/predictions-*; "
        f"best model (seed {best_result['seed']}) as {architecture}: {out_dir / 'hf'}")
    return summary


def finetune_settings(options: FinetuneOptions, dev_scores: dict) -> dict:
    """What `electra-jax predict` reads the way fine-tuning did, kept in the export's config.json."""
    kept = ("task", "seq_len", "token_column", "tag_scheme", "outside_tag", "text_field", "pair_field",
            "doc_stride", "max_query_length", "max_answer_length")
    settings = {name: getattr(options, name) for name in kept}
    if "threshold" in dev_scores:  # qa v2: the null threshold tuned on dev
        settings["null_threshold"] = dev_scores["threshold"]
    return settings


def _fit_to_size(options: FinetuneOptions, model, log) -> FinetuneOptions:
    """The learning rate and layerwise decay not given, chosen from the model's hidden size (and said)."""
    learning_rate, decay = size_defaults(model)
    chosen = {name: value for name, value in (("learning_rate", learning_rate), ("layerwise_decay", decay))
              if getattr(options, name) is None}
    if chosen:
        log(f"for hidden size {model.hidden_size}: " + ", ".join(f"--{name.replace('_', '-')} {value:g}"
                                                                 for name, value in chosen.items())
            + " (the ELECTRA paper's fine-tuning table; give them to choose)")
    return dataclasses.replace(options, **chosen)


def _train_one(model, pretrained, train, evaluate, task, options: FinetuneOptions, seed: int, pad: int, log):
    metric = task.metric
    steps_per_epoch = max(1, len(train.input_ids) // options.batch_size)
    total = steps_per_epoch * options.epochs
    ids = jnp.zeros((1, options.seq_len), jnp.int32)
    params = jax.tree.map(np.asarray, nn.unbox(model.init(jax.random.key(seed), ids, ids, ids)["params"]))
    if not options.random_init:
        params = {**params, **{name: pretrained[name] for name in params if name not in HEAD_NAMES}}
    schedule = make_schedule(ScheduleConfig(kind="linear", warmup_steps=int(options.warmup_fraction * total)),
                             options.learning_rate, total)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(schedule, eps=1e-6, weight_decay=options.weight_decay, mask=decay_mask),
                     scale_by_multipliers(layerwise_multipliers(params, family_of(model.config).layerwise_depth(model.config),
                                                                options.layerwise_decay)))
    params = jax.tree.map(jnp.asarray, params)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, rng):
        def loss_fn(p):
            attention = (batch["input_ids"] != pad).astype(jnp.int32)
            logits = model.apply({"params": p}, batch["input_ids"], batch["segment_ids"], attention,
                                 deterministic=False, rngs={"dropout": rng})
            return task.loss(logits, batch["labels"])
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    best = (None, None, -1.0, 0)
    for epoch in range(1, options.epochs + 1):
        order = rng.permutation(len(train.input_ids))
        losses = []  # the epoch's mean is what the log shows: one batch's loss swings too much to read
        for i in range(steps_per_epoch):
            rows = order[i * options.batch_size:(i + 1) * options.batch_size]
            batch = {"input_ids": train.input_ids[rows], "segment_ids": train.segment_ids[rows],
                     "labels": train.labels[rows]}
            params, opt_state, loss = step(params, opt_state, batch,
                                           jax.random.fold_in(jax.random.key(seed), epoch * 100_000 + i))
            losses.append(loss)
        dev_scores = evaluate(params, "dev")
        log(f"  seed {seed} epoch {epoch}: mean train loss {float(np.mean(jax.device_get(losses))):.4f}, "
            f"dev {metric} {dev_scores[metric]:.4f}")
        if dev_scores[metric] > best[2]:
            best = (jax.tree.map(np.asarray, params), dev_scores, dev_scores[metric], epoch)
    return best[0], best[1], best[3]


def predict_step(model, task, pad: int):
    """The jitted `(params, ids, segments) -> the task's answers` (finetune's scoring and `predict` share it)."""
    return jax.jit(lambda p, ids, segments: task.decode(model.apply({"params": p}, ids, segments,
                                                                    (ids != pad).astype(jnp.int32))))


def _predictions(predict, params, encoded, batch_size: int = 64) -> np.ndarray:
    """`predict(params, ids, segments) -> label ids` over all rows."""
    return np.concatenate([np.asarray(predict(params, encoded.input_ids[i:i + batch_size],
                                              encoded.segment_ids[i:i + batch_size]))
                           for i in range(0, len(encoded.input_ids), batch_size)])


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def _summary(runs, task, options: FinetuneOptions, labels, notes, init) -> dict:
    metric = task.metric
    summary = {"task": options.task, "metric": metric, "title": task.title, "init": str(init),
               "random_init": options.random_init, "labels": labels, "notes": notes,
               "options": dataclasses.asdict(options), "runs": runs,
               "dev": _mean_sd([r["dev"][metric] for r in runs]),
               "seconds": _mean_sd([r["seconds"] for r in runs])}
    if all("test" in r for r in runs):
        summary["test"] = _mean_sd([r["test"][metric] for r in runs])
    return summary


def results_table(summary: dict) -> str:
    metric = summary["title"]
    name = Path(summary["init"]).name + (" (random init)" if summary["random_init"] else "")

    def cell(key):
        return f"{100 * summary[key]['mean']:.2f} +- {100 * summary[key]['sd']:.2f}" if key in summary else "-"
    inference = summary.get("test_inference")
    timing = f"{inference['seconds']:.1f} s ({inference['examples_per_second']:,.0f}/s)" if inference else "-"
    return "\n".join([f"| model | params | seeds | dev {metric} | test {metric} | wall time per seed | "
                      f"test inference |", "|---|---|---|---|---|---|---|",
                      f"| {name} | {summary['parameters'] / 1e6:.2f}M | {len(summary['runs'])} | {cell('dev')} | "
                      f"{cell('test')} | {summary['seconds']['mean']:.0f} s | {timing} |", ""])
