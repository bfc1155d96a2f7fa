"""Documents streamed from text files (plain or .gz), a local TFDS dataset or a local HF dataset.

Every source yields documents as lists of lines and never holds more than one document (and one line
of at most `max_line_bytes`) in memory. Whatever is skipped or repaired is counted in a `SkipReport`
so the preparation summary can say so: nothing is dropped silently.
"""
from __future__ import annotations

import dataclasses
import glob
import gzip
import os
import zlib
from pathlib import Path
from typing import Iterator

MAX_LINE_BYTES = 1 << 20  # longer lines are split (at a space where possible) into pieces of this size
MAX_DOCUMENT_CHARS = 1 << 20  # longer documents are cut at a line: memory stays bounded without blank lines
SNIFF_BYTES = 1 << 16  # how much of a file decides whether it is binary
GZIP_MAGIC = b"\x1f\x8b"
BINARY_INVALID_FRACTION = 0.1  # a file or line with more invalid UTF-8 than this is binary, not text


@dataclasses.dataclass
class SkipReport:
    """What the reader skipped or repaired; all counts, plus the names of skipped files."""
    files: int = 0
    bytes: int = 0
    lines: int = 0
    documents: int = 0
    empty_files: list[str] = dataclasses.field(default_factory=list)
    binary_files: list[str] = dataclasses.field(default_factory=list)
    binary_lines_dropped: int = 0
    invalid_utf8_lines_repaired: int = 0
    invalid_utf8_bytes_removed: int = 0
    overlong_lines_split: int = 0
    empty_records: int = 0  # dataset records without text
    documents_split: int = 0  # documents over MAX_DOCUMENT_CHARS, cut at a line
    damaged_files: list[str] = dataclasses.field(default_factory=list)  # unreadable past some point (e.g. a cut .gz)
    overlong_words_dropped: int = 0  # tokenizer training only: words the tokenizer would encode as one unknown

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


SKIPPED_FILES = {"empty_files": "empty files", "binary_files": "binary or non-UTF-8 files",
                 "damaged_files": "damaged files, read up to the damage"}
SKIPPED_COUNTS = {"binary_lines_dropped": "binary or non-UTF-8 lines dropped",
                  "invalid_utf8_lines_repaired": "invalid UTF-8 lines repaired",
                  "invalid_utf8_bytes_removed": "invalid UTF-8 bytes removed",
                  "overlong_lines_split": "overlong lines split", "documents_split": "documents split",
                  "empty_records": "empty records",
                  "overlong_words_dropped": "words over the tokenizer's length limit left out of training"}


def skipped_line(skipped: dict) -> str:
    """What a SkipReport (as a dict) counted, in one line; '' when nothing was skipped or repaired."""
    parts = []
    for key, label in SKIPPED_FILES.items():
        if skipped.get(key):
            parts.append(f"{len(skipped[key])} {label} ({', '.join(skipped[key][:3])}"
                         f"{', ...' if len(skipped[key]) > 3 else ''})")
    for key, label in SKIPPED_COUNTS.items():
        if skipped.get(key):
            parts.append(f"{skipped[key]:,} {label}")
    return "; ".join(parts)


class SourceError(ValueError):
    """A one-line problem with an --input specification."""


@dataclasses.dataclass(frozen=True)
class Source:
    kind: str  # text | tfds | hf
    spec: str  # the --input string as given
    paths: tuple[str, ...] = ()  # text files
    name: str = ""  # tfds name[/config] or hf dataset folder
    split: str = ""


def parse_source(spec: str) -> Source:
    """`GLOB`, `tfds:NAME[/CONFIG][:SPLIT]` or `hf:PATH[:SPLIT]`, checked before any work starts."""
    if spec.startswith("tfds:"):
        name, _, split = spec[5:].partition(":")
        if not name:
            raise SourceError(f"prepare: '{spec}' names no dataset; write tfds:NAME[/CONFIG][:SPLIT]")
        return Source("tfds", spec, name=name, split=split or "train")
    if spec.startswith("hf:"):
        path, split = spec[3:], ""
        if not Path(path).exists() and ":" in path:
            path, _, split = path.rpartition(":")
        if not Path(path).is_dir():
            raise SourceError(f"prepare: '{spec}': no dataset folder {path} (give a folder written by "
                              f"datasets' save_to_disk)")
        return Source("hf", spec, name=path, split=split)
    paths = sorted(glob.glob(spec, recursive=True)) if glob.has_magic(spec) else [spec]
    paths = [p for p in paths if Path(p).is_file()]
    if not paths:
        raise SourceError(f"prepare: input '{spec}' matches no file")
    for path in paths:
        if path.endswith(".gz") and not _starts_with(path, GZIP_MAGIC):
            raise SourceError(f"prepare: {path} is named .gz but is not gzip data; rename or recompress it")
    return Source("text", spec, paths=tuple(paths))


# ---------------------------------------------------------------------------- text files

def _starts_with(path: str, magic: bytes) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(magic)) == magic


def _open_binary(path: str):
    return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _looks_binary(sample: bytes) -> bool:
    """NUL bytes and invalid UTF-8 together over a tenth of the sample: not text (a single bad line is not enough)."""
    text = sample.decode("utf-8", errors="ignore")
    invalid = len(sample) - len(text.encode("utf-8")) + sample.count(b"\x00")
    return invalid > BINARY_INVALID_FRACTION * len(sample) + 4  # +4: a character cut at the sample end


def _utf8_boundary(piece: bytes, end: int) -> int:
    """The largest index <= end that does not fall inside a multi-byte UTF-8 character."""
    while end > 0 and (piece[end] & 0xC0) == 0x80:
        end -= 1
    return end


def _raw_lines(handle, report: SkipReport, max_line_bytes: int) -> Iterator[bytes]:
    """Lines as bytes; a line over `max_line_bytes` comes out in pieces, cut at a space where possible."""
    carry, in_overlong = b"", False
    while True:
        piece = handle.readline(max_line_bytes)
        report.bytes += len(piece)
        if not piece:
            if carry:
                yield carry
            return
        if piece.endswith(b"\n") or len(piece) < max_line_bytes:
            yield carry + piece
            carry, in_overlong = b"", False
            continue
        if not in_overlong:
            report.overlong_lines_split += 1
            in_overlong = True
        cut = piece.rfind(b" ", max_line_bytes // 2)
        cut = cut + 1 if cut > 0 else _utf8_boundary(piece, len(piece) - 1)
        yield carry + piece[:cut]
        carry = piece[cut:]


def _decode(raw: bytes, report: SkipReport) -> str | None:
    """Text of a line, with invalid UTF-8 removed and counted; None for a binary line (dropped, counted)."""
    if b"\x00" in raw:  # no text has NUL bytes
        report.binary_lines_dropped += 1
        return None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    text = raw.decode("utf-8", errors="ignore")
    removed = len(raw) - len(text.encode("utf-8"))
    if removed > BINARY_INVALID_FRACTION * len(raw):
        report.binary_lines_dropped += 1
        return None
    report.invalid_utf8_lines_repaired += 1
    report.invalid_utf8_bytes_removed += removed
    return text


def _text_file_lines(path: str, report: SkipReport, max_line_bytes: int) -> Iterator[str]:
    """Lines of one file, blank lines as ''; empty and binary files are skipped and named in the report."""
    try:
        with _open_binary(path) as handle:
            sample = handle.read(SNIFF_BYTES)
    except (OSError, EOFError, zlib.error):
        report.damaged_files.append(path)
        return
    if not sample.strip() and len(sample) < SNIFF_BYTES:
        report.empty_files.append(path)
        return
    if _looks_binary(sample):
        report.binary_files.append(path)
        return
    report.files += 1
    with _open_binary(path) as handle:
        try:
            for raw in _raw_lines(handle, report, max_line_bytes):
                text = _decode(raw, report)
                if text is not None:
                    text = text.strip()
                    report.lines += bool(text)
                    yield text
        except (OSError, EOFError, zlib.error):  # a truncated or corrupt .gz: keep what was read, name the file
            report.damaged_files.append(path)


def _documents_from_lines(lines: Iterator[str], blank_lines_separate_docs: bool, report: SkipReport,
                          max_document_chars: int) -> Iterator[list[str]]:
    """Blank lines end documents; a document reaching `max_document_chars` is cut at a line (and counted), so
    memory stays bounded for a file without blank lines."""
    document: list[str] = []
    size = 0
    for line in lines:
        if not line:
            if blank_lines_separate_docs and document:
                yield document
                document, size = [], 0
            continue
        if document and size + len(line) > max_document_chars:
            report.documents_split += 1
            yield document
            document, size = [], 0
        document.append(line)
        size += len(line)
    if document:
        yield document


# ---------------------------------------------------------------------------- datasets

def _record_documents(values: Iterator, report: SkipReport, field: str, spec: str,
                      max_document_chars: int) -> Iterator[list[str]]:
    """One dataset record = one document; its lines are the record's non-blank lines."""
    for value in values:
        if value is None:
            report.empty_records += 1
            continue
        if isinstance(value, bytes):
            report.bytes += len(value)
            value = _decode(value, report)
            if value is None:  # binary: dropped and counted
                continue
        elif isinstance(value, str):
            report.bytes += len(value.encode("utf-8"))
        else:
            raise SourceError(f"prepare: field '{field}' of {spec} is {type(value).__name__}, not text; "
                              f"choose a text field with --text-field")
        lines = [line.strip() for line in value.splitlines()]
        lines = [line for line in lines if line]
        report.lines += len(lines)
        if not lines:
            report.empty_records += 1
        yield from _documents_from_lines(iter(lines), False, report, max_document_chars)


def _tfds_texts(source: Source, text_field: str, data_dir: str | None) -> Iterator[bytes]:
    try:
        import tensorflow_datasets as tfds
    except ImportError:
        raise SourceError("prepare: tfds: inputs need tensorflow-datasets: pip install 'electra-jax[tfds]'") from None
    try:
        data = tfds.data_source(source.name, split=source.split, data_dir=data_dir)
    except Exception as err:  # tfds raises many kinds; the message names the dataset, split and folder
        raise SourceError(f"prepare: cannot open {source.spec} in data_dir {data_dir or '(tfds default)'}: "
                          f"{(str(err).splitlines() or [type(err).__name__])[0]}") from None
    features = list(data.dataset_info.features.keys())
    if text_field not in features:
        raise SourceError(f"prepare: {source.spec} has no field '{text_field}' (fields: {', '.join(features)}); "
                          f"use --text-field")
    for index in range(len(data)):
        yield data[index][text_field]


def _hf_texts(source: Source, text_field: str) -> Iterator:
    try:
        import datasets
    except ImportError:
        raise SourceError("prepare: hf: inputs need the datasets package: pip install 'electra-jax[hf]'") from None
    data = datasets.load_from_disk(source.name)
    if isinstance(data, datasets.DatasetDict):
        if source.split not in data:
            raise SourceError(f"prepare: {source.spec}: name a split as hf:PATH:SPLIT (splits: {', '.join(data)})")
        data = data[source.split]
    elif source.split:
        raise SourceError(f"prepare: {source.spec}: {source.name} holds one dataset, not splits; drop ':{source.split}'")
    if text_field not in data.column_names:
        raise SourceError(f"prepare: {source.spec} has no column '{text_field}' (columns: "
                          f"{', '.join(data.column_names)}); use --text-field")
    for batch in data.select_columns([text_field]).iter(batch_size=256):  # memory-mapped: bounded RAM
        yield from batch[text_field]


def check_source(source: Source, text_field: str, data_dir: str | None) -> None:
    """Open a dataset source once so a wrong name, split or field fails before any work."""
    if source.kind == "tfds":
        next(iter(_tfds_texts(source, text_field, data_dir)), None)
    elif source.kind == "hf":
        next(iter(_hf_texts(source, text_field)), None)


def read_documents(sources: list[Source], report: SkipReport, *, blank_lines_separate_docs: bool = True,
                   text_field: str = "text", tfds_data_dir: str | None = None, max_line_bytes: int = MAX_LINE_BYTES,
                   max_document_chars: int = MAX_DOCUMENT_CHARS) -> Iterator[list[str]]:
    """All documents of all sources, in order."""
    for source in sources:
        if source.kind == "text":
            documents = (document for path in source.paths for document in _documents_from_lines(
                _text_file_lines(path, report, max_line_bytes), blank_lines_separate_docs, report, max_document_chars))
        else:
            values = (_tfds_texts(source, text_field, tfds_data_dir) if source.kind == "tfds"
                      else _hf_texts(source, text_field))
            report.files += 1
            documents = _record_documents(values, report, text_field, source.spec, max_document_chars)
        for document in documents:
            report.documents += 1
            yield document


def source_size(sources: list[Source]) -> int | None:
    """Total bytes of plain (uncompressed) text inputs, for the progress bar; None when unknown."""
    if any(s.kind != "text" or any(p.endswith(".gz") for p in s.paths) for s in sources):
        return None
    return sum(os.path.getsize(p) for s in sources for p in s.paths)
