"""Corpus -> packed ArrayRecord shards, streaming, in parallel, the same bytes whatever the worker count.

The main process reads the sources in order and cuts the document stream into work units of about
`UNIT_CHARS` of text; a unit is all a worker sees, and its random choices come from `(seed, unit index)`,
so the output depends on the corpus and the seed alone. At most a few units per worker are in flight, so
memory stays flat however large the corpus. Shards are written in unit order into a hidden folder that
becomes `--out` only when everything succeeded.

`eval_fraction` holds out whole documents for held-out evaluation: a document goes to the eval shards when a
hash of its text (and the seed) falls below the fraction, so the split depends on nothing else, and a
document that occurs twice lands on one side only. Train shards never hold an eval document.
"""
from __future__ import annotations

import collections
import concurrent.futures
import dataclasses
import hashlib
import json
import multiprocessing
import os
import random
import time
from pathlib import Path
from typing import Iterator

from electra_jax.data.packing import PACKERS, record_dtype
from electra_jax.data.sources import (SkipReport, check_source, parse_source, read_documents, skipped_line,
                                      source_size)
from electra_jax.data.text_tokenizer import copy_tokenizer, load_text_tokenizer
from electra_jax.storage import refuse_nonempty, staged_folder

UNIT_CHARS = 1 << 18  # text per work unit: fixed, so unit boundaries never depend on the worker count
METADATA = "metadata.json"
RECORD_OPTIONS = "group_size:1,uncompressed"  # one record per chunk: random access for a shuffled loader
SHORT_SEQ_PROB = {"electra": 0.05, "albert": 0.1}  # the originals' defaults


@dataclasses.dataclass(frozen=True)
class PackOptions:
    format: str = "electra"
    seq_len: int = 128
    seed: int = 0
    short_seq_prob: float | None = None  # None: the format's default
    single_segment_prob: float = 0.1  # ELECTRA only
    blank_lines_separate_docs: bool = True
    text_field: str = "text"
    tfds_data_dir: str | None = None
    examples_per_shard: int = 10_000  # a reader's cost per random read grows with the records in a file
    eval_fraction: float = 0.0  # share of whole documents held out in the eval shards


class PrepareError(ValueError):
    """A one-line problem with the prepare command's arguments."""


def _short_seq_prob(options: PackOptions) -> float:
    return SHORT_SEQ_PROB[options.format] if options.short_seq_prob is None else options.short_seq_prob


def _check_options(options: PackOptions, workers: int) -> None:
    if options.format not in PACKERS:
        raise PrepareError(f"prepare: --format must be one of {', '.join(PACKERS)}, got {options.format!r}")
    if options.seq_len < 8:
        raise PrepareError(f"prepare: --seq-len must be at least 8, got {options.seq_len}")
    if workers < 0:
        raise PrepareError(f"prepare: --workers must be >= 0 (0: in this process), got {workers}")
    if not 0.0 <= _short_seq_prob(options) <= 1.0:
        raise PrepareError(f"prepare: --short-seq-prob must be in [0, 1], got {options.short_seq_prob}")
    if not 0.0 <= options.single_segment_prob <= 1.0:
        raise PrepareError(f"prepare: --single-segment-prob must be in [0, 1], got {options.single_segment_prob}")
    if not 0.0 <= options.eval_fraction < 1.0:
        raise PrepareError(f"prepare: --eval-fraction must be in [0, 1), got {options.eval_fraction}")
    if options.examples_per_shard < 1:
        raise PrepareError(f"prepare: --examples-per-shard must be positive, got {options.examples_per_shard}")


# ---------------------------------------------------------------------------- work units

def work_units(documents: Iterator[list[str]]) -> Iterator[list[list[str]]]:
    """Consecutive documents grouped into units of about UNIT_CHARS (the reader caps a document's size)."""
    unit: list[list[str]] = []
    size = 0
    for document in documents:
        unit.append(document)
        size += sum(map(len, document))
        if size >= UNIT_CHARS:
            yield unit
            unit, size = [], 0
    if unit:
        yield unit


def held_out(document: list[str], seed: int, fraction: float) -> bool:
    """Whether a document belongs to the eval split: a hash of its text and the seed, uniform in [0, 1)."""
    if fraction <= 0.0:
        return False
    digest = hashlib.blake2b(f"{seed}".encode(), digest_size=8)
    for line in document:
        digest.update(line.encode("utf-8", "surrogatepass"))
        digest.update(b"\n")
    return int.from_bytes(digest.digest(), "big") / 2 ** 64 < fraction


class UnitPacker:
    """Tokenizes and packs one unit; one per worker process (the tokenizer is loaded once)."""

    def __init__(self, tokenizer_dir: str, options: PackOptions):
        self.tokenizer = load_text_tokenizer(tokenizer_dir)
        self.options = options
        self.dtype = record_dtype(self.tokenizer.vocab_size)

    def __call__(self, index: int, documents: list[list[str]]):
        """(train records, their stats, eval records, their stats) of one unit."""
        o, specials = self.options, self.tokenizer.specials

        def packer(split: str):  # each split draws from its own stream: adding an eval split leaves train's
            rng = random.Random(f"{o.seed}:{index}" + ("" if split == "train" else f":{split}"))
            return PACKERS[o.format](o.seq_len, specials.cls, specials.sep, self.dtype, rng, _short_seq_prob(o),
                                     o.single_segment_prob)

        train, held = packer("train"), packer("eval")
        lines = [line for document in documents for line in document]
        ids = iter(self.tokenizer.encode_lines(lines))
        for document in documents:
            (held if held_out(document, o.seed, o.eval_fraction) else train).add_document([next(ids) for _ in document])
        return train.records, train.stats, held.records, held.stats


_WORKER: UnitPacker | None = None


def _init_worker(tokenizer_dir: str, options: PackOptions) -> None:
    global _WORKER
    os.environ["TOKENIZERS_PARALLELISM"] = "false"  # one core per worker: --workers decides the parallelism
    _WORKER = UnitPacker(tokenizer_dir, options)


def _pack_in_worker(index: int, documents: list[list[str]]):
    return _WORKER(index, documents)


def _packed_units(units: Iterator[list[list[str]]], tokenizer_dir: str, options: PackOptions, workers: int):
    """(train records, stats, eval records, stats) per unit, in unit order, with a bounded number of units in flight."""
    if workers == 0:
        packer = UnitPacker(tokenizer_dir, options)
        for index, unit in enumerate(units):
            yield packer(index, unit)
        return
    context = multiprocessing.get_context("spawn")  # never fork a process that may hold JAX or Rust threads
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                                                initargs=(tokenizer_dir, options)) as pool:
        in_flight: collections.deque = collections.deque()
        for index, unit in enumerate(units):
            in_flight.append(pool.submit(_pack_in_worker, index, unit))
            if len(in_flight) >= 2 * workers + 1:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()


# ---------------------------------------------------------------------------- shards

class ShardWriter:
    def __init__(self, folder: Path, examples_per_shard: int, prefix: str = "shard"):
        self.folder, self.examples_per_shard, self.prefix = folder, examples_per_shard, prefix
        self.shards: list[dict] = []
        self._writer = None

    def write(self, record: bytes) -> None:
        if self._writer is None or self.shards[-1]["examples"] == self.examples_per_shard:
            self._close_current()
            from array_record.python.array_record_module import ArrayRecordWriter
            name = f"{self.prefix}-{len(self.shards):05d}.array_record"
            self._writer = ArrayRecordWriter(str(self.folder / name), RECORD_OPTIONS)
            self.shards.append({"file": name, "examples": 0})
        self._writer.write(record)
        self.shards[-1]["examples"] += 1

    def _close_current(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def close(self) -> list[dict]:
        self._close_current()
        return self.shards


# ---------------------------------------------------------------------------- the command

def prepare(inputs: list[str], tokenizer_dir: str | Path, out_dir: str | Path, options: PackOptions = PackOptions(),
            workers: int = 1, progress: bool = True, log=print) -> dict:
    """Prepare `inputs` into `out_dir`; returns the metadata (also written to out_dir/metadata.json)."""
    out_dir, tokenizer_dir = Path(out_dir), Path(tokenizer_dir)
    _check_options(options, workers)
    refuse_nonempty(out_dir, "prepare")  # prepared shards are never overwritten
    tokenizer = load_text_tokenizer(tokenizer_dir)  # a missing or broken tokenizer fails here
    if options.format == "albert" and tokenizer.kind != "sentencepiece":
        log("note: ALBERT models are usually trained with a SentencePiece vocabulary (--kind sentencepiece)")
    sources = [parse_source(spec) for spec in inputs]
    for source in sources:
        check_source(source, options.text_field, options.tfds_data_dir)
    report = SkipReport()
    totals: collections.Counter = collections.Counter()
    eval_totals: collections.Counter = collections.Counter()
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=source_size(sources), unit="B", unit_scale=True, unit_divisor=1024, desc="prepare",
                   mininterval=1.0, dynamic_ncols=True)
    with staged_folder(out_dir, "prepare") as staging:
        copy_tokenizer(tokenizer.folder, staging / "tokenizer")
        writer = ShardWriter(staging, options.examples_per_shard)
        eval_writer = ShardWriter(staging, options.examples_per_shard, prefix="eval")
        documents = read_documents(sources, report, blank_lines_separate_docs=options.blank_lines_separate_docs,
                                   text_field=options.text_field, tfds_data_dir=options.tfds_data_dir)
        seen_bytes = 0
        try:
            for records, stats, eval_records, eval_stats in _packed_units(work_units(documents),
                                                                          str(tokenizer.folder), options, workers):
                for record in records:
                    writer.write(record)
                for record in eval_records:
                    eval_writer.write(record)
                totals.update(stats)
                eval_totals.update(eval_stats)
                if bar is not None:
                    bar.update(report.bytes - seen_bytes)
                    seen_bytes = report.bytes
        finally:
            shards, eval_shards = writer.close(), eval_writer.close()
            if bar is not None:
                bar.close()
        if not totals["examples"]:
            raise PrepareError(f"prepare: no text found in {', '.join(inputs)} (see what was skipped: "
                               f"{skipped_line(report.as_dict()) or 'nothing'})")
        if options.eval_fraction and not eval_totals["examples"]:
            raise PrepareError(f"prepare: --eval-fraction {options.eval_fraction} held out no document of "
                               f"{totals['documents']:,}; raise it, or separate documents with blank lines")
        metadata = _metadata(sources, tokenizer, options, shards, totals, report)
        if options.eval_fraction:
            metadata["eval"] = {"fraction": options.eval_fraction, "shards": eval_shards,
                                "examples": eval_totals["examples"], "tokens": eval_totals["tokens"],
                                "documents": eval_totals["documents"]}
        (staging / METADATA).write_text(json.dumps(metadata, indent=2, ensure_ascii=False) + "\n")
    seconds = time.perf_counter() - start
    for line in summary_lines(metadata, seconds, workers):
        log(line)
    return metadata


def _metadata(sources, tokenizer, options: PackOptions, shards, totals, report: SkipReport) -> dict:
    examples = totals["examples"]
    return {
        "format": options.format,
        "seq_len": options.seq_len,
        "record_dtype": record_dtype(tokenizer.vocab_size).name,
        "record_layout": "[length of '[CLS] A [SEP]', label, token ids...] (unpadded; label: SOP, 1 = swapped)",
        "tokenizer": {"kind": tokenizer.kind, "fingerprint": tokenizer.fingerprint,
                      "vocab_size": tokenizer.vocab_size, "special_ids": dataclasses.asdict(tokenizer.specials)},
        "options": {"seed": options.seed, "short_seq_prob": _short_seq_prob(options),
                    "single_segment_prob": options.single_segment_prob if options.format == "electra" else None,
                    "blank_lines_separate_docs": options.blank_lines_separate_docs,
                    "text_field": options.text_field, "eval_fraction": options.eval_fraction},
        "sources": [{"input": source.spec, "kind": source.kind,
                     "files": [{"path": p, "bytes": os.path.getsize(p)} for p in source.paths]}
                    for source in sources],
        "shards": shards,
        "counts": {
            "examples": examples,
            "tokens": totals["tokens"],
            "fill": round(totals["tokens"] / (examples * options.seq_len), 4),
            "documents": report.documents,
            "lines": report.lines,
            "bytes": report.bytes,
            "single_segment": totals["single_segment"],
            "short_target": totals["short_target"],
            "swapped": totals["swapped"],
            "trimmed_tokens": totals["trimmed_tokens"],
            "empty_documents": totals["empty_documents"],
            "too_short_for_a_pair": totals["too_short_for_a_pair"],
        },
        "skipped": report.as_dict(),
    }


def summary_lines(metadata: dict, seconds: float, workers: int) -> list[str]:
    c, s = metadata["counts"], metadata["skipped"]
    megabytes = c["bytes"] / 1e6
    rate = megabytes / max(seconds, 1e-9)
    lines = [
        f"prepared {c['examples']:,} {metadata['format']} examples of {metadata['seq_len']} tokens "
        f"({c['tokens']:,} tokens, {c['fill']:.1%} filled) from {c['documents']:,} documents, {c['lines']:,} lines, "
        f"{megabytes:.1f} MB in {len(metadata['shards'])} shard(s)",
        (f"speed: {rate:.2f} MB/s with {workers} worker(s), {rate / workers:.2f} MB/s per worker ({seconds:.1f} s)"
         if workers else f"speed: {rate:.2f} MB/s in this process ({seconds:.1f} s)"),
        f"examples: {c['single_segment']:,} single-segment, {c['short_target']:,} shorter targets"
        + (f", {c['swapped']:,} swapped pairs" if metadata["format"] == "albert" else "")
        + f"; {c['trimmed_tokens']:,} tokens trimmed at example ends",
    ]
    if "eval" in metadata:
        e = metadata["eval"]
        lines.append(f"held out for evaluation: {e['examples']:,} examples ({e['tokens']:,} tokens) from "
                     f"{e['documents']:,} documents (eval fraction {e['fraction']}), in the eval-* shards")
    skipped = skipped_line(s)
    dropped = [f"{c[k]:,} {k.replace('_', ' ')}" for k in ("empty_documents", "too_short_for_a_pair") if c[k]]
    lines.append("skipped or repaired: " + ("; ".join(filter(None, [skipped, *dropped])) or "nothing"))
    return lines


def read_metadata(folder: str | Path) -> dict:
    path = Path(folder) / METADATA
    if not path.is_file():
        raise FileNotFoundError(f"prepared data: {path} not found; make the folder with `electra-jax prepare`")
    return json.loads(path.read_text())
