"""`electra-jax finetune --task ner|pos`: token classification from a pretraining run (or an HF folder),
AdamW with warmup + linear decay and layerwise learning-rate decay, dev-based model selection, several seeds
summarised as mean +- sd, and the best model written as an HF `ElectraForTokenClassification`.
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
from electra_jax.finetune.data import FinetuneDataError, check_labels, read_columns, read_conllu, repair_iob2
from electra_jax.finetune.metrics import entity_scores, token_accuracy
from electra_jax.finetune.model import BODY, TokenClassifier
from electra_jax.finetune.tokens import IGNORE, encode_sentences, words_from_windows
from electra_jax.optim import decay_mask, layerwise_multipliers, make_schedule, scale_by_multipliers

TASKS = ("ner", "pos")


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    task: str = "ner"
    seeds: int = 1
    epochs: int = 3
    learning_rate: float = 1e-4
    batch_size: int = 32
    layerwise_decay: float = 0.8
    warmup_fraction: float = 0.1
    weight_decay: float = 0.01
    seq_len: int = 128
    tag_column: int = 1
    random_init: bool = False  # the run's architecture and tokenizer, fresh parameters (a baseline)


def read_split(path, options: FinetuneOptions):
    """Sentences of one split; for NER, stray I-X repaired to B-X (the count is returned)."""
    path = Path(path)
    sentences = read_conllu(path) if path.suffix == ".conllu" else read_columns(path, options.tag_column)
    repaired = 0
    if options.task == "ner":
        for sentence in sentences:
            sentence.tags, count = repair_iob2(sentence.tags)
            repaired += count
    return sentences, repaired


def _score(task: str, gold, predicted) -> dict:
    if task == "ner":
        scores = entity_scores(gold, predicted)
        return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"],
                "per_type": {k: v["f1"] for k, v in scores["per_type"].items()}}
    return {"accuracy": token_accuracy(gold, predicted)}


def _main_metric(task: str) -> str:
    return "f1" if task == "ner" else "accuracy"


def load_init(init: str | Path, out_dir: Path, log):
    """(config, pretrained params, tokenizer folder) from a run directory or, imported first, an HF folder."""
    from electra_jax.hf.export import load_run_params
    init = Path(init)
    if not (init / "config.yaml").is_file():
        from electra_jax.hf.importer import import_hf
        import_hf(init, out_dir / "init", log=log)
        init = out_dir / "init"
    config, params, step = load_run_params(init, None)
    if config.model.architecture != "electra":
        raise FinetuneDataError(f"finetune: {init} is an {config.model.architecture} run; token classification "
                                f"is built for ELECTRA discriminators here")
    log(f"initialising from {init} (step {step})")
    return config, params, init / "tokenizer"


def finetune(train: str, dev: str, init: str, out_dir: str | Path, test: str | None = None,
             options: FinetuneOptions = FinetuneOptions(), log=print) -> dict:
    from electra_jax.data.text_tokenizer import load_text_tokenizer
    from electra_jax.hf.staging import refuse_nonempty
    if options.task not in TASKS:
        raise FinetuneDataError(f"finetune: --task must be one of {', '.join(TASKS)}, got {options.task!r}")
    out_dir = Path(out_dir)
    refuse_nonempty(out_dir, "finetune")
    splits = {"train": read_split(train, options), "dev": read_split(dev, options)}
    if test:
        splits["test"] = read_split(test, options)
    labels = sorted({tag for sentence in splits["train"][0] for tag in sentence.tags})
    for name in ("dev", "test"):
        if name in splits:
            check_labels(splits[name][0], set(labels), {"dev": dev, "test": test}[name])
    out_dir.mkdir(parents=True)
    config, pretrained, tokenizer_dir = load_init(init, out_dir, log)
    tokenizer = load_text_tokenizer(tokenizer_dir)
    label_ids = {label: i for i, label in enumerate(labels)}
    windows = {name: encode_sentences(sentences, tokenizer, label_ids, options.seq_len)
               for name, (sentences, _) in splits.items()}
    repaired = {name: count for name, (_, count) in splits.items()}
    log(f"{options.task}: {len(labels)} labels, " + ", ".join(
        f"{name} {len(splits[name][0]):,} sentences in {len(w.input_ids):,} windows" for name, w in windows.items())
        + (f"; stray I- tags repaired: {repaired}" if options.task == "ner" else ""))
    model = TokenClassifier(dataclasses.replace(config.model, max_position_embeddings=max(
        config.model.max_position_embeddings, options.seq_len)), len(labels))
    pad = tokenizer.specials.pad
    predict = jax.jit(lambda p, ids: model.apply({"params": p}, ids, jnp.zeros_like(ids),
                                                 (ids != pad).astype(jnp.int32)).argmax(-1))
    runs = []
    for seed in range(options.seeds):
        start = time.perf_counter()
        params, dev_scores, epoch = _train_one(model, pretrained, windows, splits, labels, options, seed, pad,
                                               predict, log)
        result = {"seed": seed, "best_epoch": epoch, "dev": dev_scores, "seconds": time.perf_counter() - start}
        if "test" in windows:
            result["test"] = _evaluate(predict, params, windows["test"], splits["test"][0], labels, options)
        runs.append((result, params))
        log(f"seed {seed}: dev {_main_metric(options.task)} {dev_scores[_main_metric(options.task)]:.4f}"
            + (f", test {result['test'][_main_metric(options.task)]:.4f}" if "test" in result else "")
            + f" ({result['seconds']:.0f} s)")
    summary = _summary([r for r, _ in runs], options, labels, repaired, init)
    (out_dir / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out_dir / "results.md").write_text(results_table(summary))
    best_result, best_params = max(runs, key=lambda run: run[0]["dev"][_main_metric(options.task)])
    from electra_jax.finetune.export import export_token_classifier
    export_token_classifier(model, best_params, labels, tokenizer_dir, out_dir / "hf")
    log(f"results: {out_dir / 'results.json'}, {out_dir / 'results.md'}; best model (seed {best_result['seed']}): "
        f"{out_dir / 'hf'}")
    return summary


def _train_one(model, pretrained, windows, splits, labels, options: FinetuneOptions, seed: int, pad: int, predict,
               log):
    c = model.config
    train = windows["train"]
    steps_per_epoch = max(1, len(train.input_ids) // options.batch_size)
    total = steps_per_epoch * options.epochs
    ids = jnp.zeros((1, options.seq_len), jnp.int32)
    params = jax.tree.map(np.asarray, nn.unbox(model.init(jax.random.key(seed), ids, ids, ids)["params"]))
    if not options.random_init:
        params = {**params, **{name: pretrained[name] for name in BODY}}
    schedule = make_schedule(ScheduleConfig(kind="linear", warmup_steps=int(options.warmup_fraction * total)),
                             options.learning_rate, total)
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(schedule, eps=1e-6, weight_decay=options.weight_decay, mask=decay_mask),
                     scale_by_multipliers(layerwise_multipliers(params, c.num_layers, options.layerwise_decay)))
    params = jax.tree.map(jnp.asarray, params)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, batch, rng):
        def loss_fn(p):
            attention = (batch["input_ids"] != pad).astype(jnp.int32)
            logits = model.apply({"params": p}, batch["input_ids"], jnp.zeros_like(batch["input_ids"]), attention,
                                 deterministic=False, rngs={"dropout": rng})
            real = batch["labels"] != IGNORE
            losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(batch["labels"], 0))
            return (losses * real).sum() / jnp.maximum(real.sum(), 1)
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    rng = np.random.default_rng(seed)
    best = (None, None, -1.0, 0)
    for epoch in range(1, options.epochs + 1):
        order = rng.permutation(len(train.input_ids))
        for i in range(steps_per_epoch):
            rows = order[i * options.batch_size:(i + 1) * options.batch_size]
            batch = {"input_ids": train.input_ids[rows], "labels": train.labels[rows]}
            params, opt_state, loss = step(params, opt_state, batch,
                                           jax.random.fold_in(jax.random.key(seed), epoch * 100_000 + i))
        dev_scores = _evaluate(predict, params, windows["dev"], splits["dev"][0], labels, options)
        metric = dev_scores[_main_metric(options.task)]
        log(f"  seed {seed} epoch {epoch}: loss {float(loss):.4f}, dev {_main_metric(options.task)} {metric:.4f}")
        if metric > best[2]:
            best = (jax.tree.map(np.asarray, params), dev_scores, metric, epoch)
    return best[0], best[1], best[3]


def _evaluate(predict, params, windows, sentences, labels, options, batch_size: int = 64) -> dict:
    """`predict(params, ids) -> label ids` over all windows, scored on the words."""
    predictions = np.concatenate([np.asarray(predict(params, windows.input_ids[i:i + batch_size]))
                                  for i in range(0, len(windows.input_ids), batch_size)])
    predicted = words_from_windows(windows, predictions, sentences, labels)
    return _score(options.task, [s.tags for s in sentences], predicted)


def _mean_sd(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0}


def _summary(runs, options: FinetuneOptions, labels, repaired, init) -> dict:
    metric = _main_metric(options.task)
    summary = {"task": options.task, "init": str(init), "random_init": options.random_init, "labels": labels,
               "stray_tags_repaired": repaired, "options": dataclasses.asdict(options), "runs": runs,
               "dev": _mean_sd([r["dev"][metric] for r in runs]),
               "seconds": _mean_sd([r["seconds"] for r in runs])}
    if all("test" in r for r in runs):
        summary["test"] = _mean_sd([r["test"][metric] for r in runs])
    return summary


def results_table(summary: dict) -> str:
    metric = "NER F1" if summary["task"] == "ner" else "POS accuracy"
    name = Path(summary["init"]).name + (" (random init)" if summary["random_init"] else "")

    def cell(key):
        return f"{100 * summary[key]['mean']:.2f} +- {100 * summary[key]['sd']:.2f}" if key in summary else "-"
    return "\n".join([f"| model | seeds | dev {metric} | test {metric} | wall time per seed |", "|---|---|---|---|---|",
                      f"| {name} | {len(summary['runs'])} | {cell('dev')} | {cell('test')} | "
                      f"{summary['seconds']['mean']:.0f} s |", ""])
