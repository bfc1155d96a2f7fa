"""`electra-jax predict`: a fine-tuned model (the `hf/` folder `finetune` writes, or its FT_OUT folder) over a
file, in batches, the answers written in the layout `finetune` writes its predictions files in, with the speed
in examples and tokens per second.

The model is read back from its HF folder through the same name table the export wrote it with, so what runs
here is what transformers runs. How the text is cut into windows comes from the fine-tuning
(`electra_jax_finetune` in its config.json); the command line may change it.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

from electra_jax.finetune.data import FinetuneDataError
from electra_jax.finetune.tasks import TASKS

HEAD_TASKS = {"token": ("ner", "pos"), "sequence": ("classify", "regression"), "qa": ("qa",)}


@dataclasses.dataclass
class Finetuned:
    folder: Path
    head: str  # "token", "sequence" or "qa"
    model: object  # the Flax classifier
    params: dict
    tokenizer: object
    labels: list[str]
    settings: dict  # the fine-tuning's electra_jax_finetune entry ({} for a folder from elsewhere)
    problem_type: str | None


def load_finetuned(folder: str | Path) -> Finetuned:
    """An HF …ForTokenClassification / …ForSequenceClassification / …ForQuestionAnswering folder with our
    tokenizer files, as our parameters."""
    import flax.linen as nn
    import jax

    from electra_jax.config import ModelConfig
    from electra_jax.data.text_tokenizer import load_text_tokenizer
    from electra_jax.finetune.export import classifier_rows
    from electra_jax.hf.importer import fill_params, hf_family, read_tensors
    folder = Path(folder)
    if (folder / "hf" / "config.json").is_file():  # a finetune output folder
        folder = folder / "hf"
    path = folder / "config.json"
    if not path.is_file():
        raise FinetuneDataError(f"predict: {path} not found (give the hf/ folder `electra-jax finetune` wrote)")
    hf_config = json.loads(path.read_text())
    family = hf_family(hf_config, path)
    architecture = (hf_config.get("architectures") or ["?"])[0]
    heads = {"token": family.hf.token_head[0], "sequence": family.hf.sequence_head[0], "qa": family.hf.qa_head[0]}
    head = next((h for h, name in heads.items() if name == architecture), None)
    if head is None:
        raise FinetuneDataError(f"predict: {path}: {architecture} is not a fine-tuned model (one of "
                                f"{', '.join(heads.values())})")
    model_config = family.hf.from_hf_config(hf_config, ModelConfig())
    id2label = hf_config.get("id2label") or {}
    labels = [id2label.get(str(i), f"LABEL_{i}") for i in range(int(hf_config.get("num_labels", len(id2label))))]
    model = family.classifier(model_config, len(labels), head != "sequence")
    ids = np.zeros((1, 8), np.int32)
    shapes = jax.eval_shape(lambda: model.init(jax.random.key(0), ids, ids, ids))["params"]
    params = jax.tree.map(lambda leaf: np.zeros(leaf.shape, np.float32), nn.unbox(shapes))
    _, rows = classifier_rows(model_config, head)
    fill_params(params, rows, read_tensors(folder), architecture, folder)
    return Finetuned(folder, head, model, params, load_text_tokenizer(folder), labels,
                     hf_config.get("electra_jax_finetune", {}), hf_config.get("problem_type"))


def predict(model_dir: str | Path, input_path: str | Path, output: str | Path | None = None, task: str | None = None,
            overrides: dict | None = None, batch_size: int = 64, log=print) -> dict:
    """Writes the predictions to `output` (stdout when None); returns the timing."""
    import jax
    import jax.numpy as jnp

    from electra_jax.finetune.qa import qa_stride
    from electra_jax.finetune.train import FinetuneOptions, _check_options, _predictions, predict_step
    from electra_jax.storage import write_atomic
    finetuned = load_finetuned(model_dir)
    known = {field.name for field in dataclasses.fields(FinetuneOptions)}
    settings = {k: v for k, v in finetuned.settings.items() if k in known}
    task = task or settings.get("task") or HEAD_TASKS[finetuned.head][0]
    if task not in HEAD_TASKS[finetuned.head]:
        raise FinetuneDataError(f"predict: --task {task} needs a model with a {task} head; {finetuned.folder} is for "
                                f"--task {' or '.join(HEAD_TASKS[finetuned.head])}")
    if task == "regression" and finetuned.problem_type != "regression" or (
            task == "classify" and finetuned.problem_type == "regression"):
        raise FinetuneDataError(f"predict: {finetuned.folder} is a {finetuned.problem_type} model; use --task "
                                f"{'regression' if finetuned.problem_type == 'regression' else 'classify'}")
    options = FinetuneOptions(**{**settings, "task": task, **{k: v for k, v in (overrides or {}).items()
                                                               if v is not None}})
    _check_options(options)
    if task == "qa" and options.doc_stride is None:
        options = dataclasses.replace(options, doc_stride=qa_stride(options.seq_len, options.max_query_length))
    if batch_size < 1:
        raise FinetuneDataError(f"predict: --batch-size must be at least 1, got {batch_size}")
    spec = TASKS[task]
    items = spec.read_unlabelled(input_path, options, finetuned.labels)
    encoded = spec.encode(items, finetuned.tokenizer, {label: i for i, label in enumerate(finetuned.labels)},
                          options)
    pad = finetuned.tokenizer.specials.pad
    step = predict_step(finetuned.model, spec, pad)
    params = jax.tree.map(jnp.asarray, finetuned.params)
    first = slice(0, min(batch_size, len(encoded.input_ids)))
    jax.block_until_ready(step(params, encoded.input_ids[first], encoded.segment_ids[first]))  # compile
    start = time.perf_counter()
    predicted = _predictions(step, params, encoded, batch_size)
    seconds = time.perf_counter() - start
    threshold = finetuned.settings.get("null_threshold")  # qa v2: answers "" below it, as finetune did
    tuned = {"threshold": threshold} if threshold is not None else None
    text = spec.write_predictions(items, encoded, predicted, finetuned.labels, options, tuned)
    if output is None:
        sys.stdout.write(text)
    else:
        write_atomic(output, text)
    tokens = int((encoded.input_ids != pad).sum())
    timing = {"examples": len(items), "windows": len(encoded.input_ids), "tokens": tokens, "seconds": seconds,
              "examples_per_second": len(items) / seconds, "tokens_per_second": tokens / seconds}
    log(f"predict: {len(items):,} examples ({len(encoded.input_ids):,} windows, {tokens:,} tokens) in "
        f"{seconds:.2f} s: {timing['examples_per_second']:,.1f} examples/s, {timing['tokens_per_second']:,.0f} "
        f"tokens/s on {jax.devices()[0].platform} (batch {batch_size}, compile excluded)"
        + (f"; written to {output}" if output else ""))
    return timing
