"""Fine-tuning inputs: CoNLL-style columns and CoNLL-U for token tasks, CSV/TSV/JSONL for sentences and
sentence pairs. Every problem is one `FinetuneDataError` naming the file and line.
"""
from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path


class FinetuneDataError(ValueError):
    """A one-line problem with a fine-tuning file, naming the file and line."""


@dataclasses.dataclass
class TaggedSentence:
    tokens: list[str]
    tags: list[str]
    line: int = 0  # of the first token, for messages


def _tagged_sentences(path: Path, word) -> list[TaggedSentence]:
    """Blank lines end sentences; `word(number, line, stripped)` gives (token, tag), or None to skip the line."""
    sentences, tokens, tags, first = [], [], [], 0
    for number, line in _lines(path):
        stripped = line.strip()
        if not stripped:
            if tokens:
                sentences.append(TaggedSentence(tokens, tags, first))
                tokens, tags = [], []
            continue
        pair = word(number, line, stripped)
        if pair is None:
            continue
        first = first if tokens else number
        tokens.append(pair[0])
        tags.append(pair[1])
    if tokens:
        sentences.append(TaggedSentence(tokens, tags, first))
    return _nonempty(sentences, path)


def read_columns(path: str | Path, column: int = 1, skipped: list[int] | None = None) -> list[TaggedSentence]:
    """Token in the first column, the tag in `column` (0-based), tab or space separated; blank lines end
    sentences; `-DOCSTART-` lines and `# ...` comments are skipped. A line without the tag column is an error,
    or, when a `skipped` list is given, left out and its number appended there."""
    path = Path(path)

    def word(number, line, stripped):
        if stripped.startswith("-DOCSTART-") or (stripped.startswith("# ") and "\t" not in stripped):
            return None  # document markers and "# id = ..." comments (a hashtag token has no space after #)
        fields = line.rstrip("\n").split("\t") if "\t" in line else stripped.split()
        if len(fields) <= column:
            if skipped is not None:
                skipped.append(number)
                return None
            raise FinetuneDataError(f"{path}:{number}: {len(fields)} column(s), no tag column {column} "
                                    f"(0-based; choose it with --tag-column, or leave such lines out with "
                                    f"--skip-malformed): {stripped[:60]!r}")
        token, tag = fields[0].strip(), fields[column].strip()
        if not token or not tag:
            raise FinetuneDataError(f"{path}:{number}: empty token or tag: {stripped[:60]!r}")
        return token, tag
    return _tagged_sentences(path, word)


def read_conllu(path: str | Path) -> list[TaggedSentence]:
    """FORM and UPOS of each word; multi-word token ranges (1-2) and empty nodes (1.1) are skipped."""
    path = Path(path)

    def word(number, line, stripped):
        if stripped.startswith("#"):
            return None
        fields = line.rstrip("\n").split("\t")
        if len(fields) != 10:
            raise FinetuneDataError(f"{path}:{number}: CoNLL-U lines have 10 tab-separated fields, this has "
                                    f"{len(fields)}: {stripped[:60]!r}")
        if "-" in fields[0] or "." in fields[0]:
            return None
        return fields[1], fields[3]
    return _tagged_sentences(path, word)


def io_to_iob2(tags: list[str], outside: str = "O") -> tuple[list[str], int]:
    """IO tags (a bare type such as PER on every word of an entity; `outside` for the rest) as IOB2: a run of
    one type is one entity. Prefixed tags pass through. Returns the tags and how many were bare."""
    converted, previous, bare = [], "O", 0
    for tag in tags:
        if tag in (outside, "O"):
            tag = "O"
        elif not tag.startswith(("B-", "I-")):
            tag, bare = ("I-" if previous[2:] == tag else "B-") + tag, bare + 1
        converted.append(tag)
        previous = tag
    return converted, bare


def repair_iob2(tags: list[str]) -> tuple[list[str], int]:
    """A stray I-X (after O, or after another type) becomes B-X, as conlleval reads it; returns the count."""
    repaired, previous, count = [], "O", 0
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag, count = "B-" + tag[2:], count + 1
        repaired.append(tag)
        previous = tag
    return repaired, count


@dataclasses.dataclass
class SentenceExample:
    text: str
    pair: str | None
    label: str
    line: int = 0


def read_sentences(path: str | Path, text_field: str = "text", pair_field: str | None = None,
                   label_field: str = "label") -> list[SentenceExample]:
    """Single sentences or pairs with a label from CSV, TSV (header row) or JSONL (one object per line)."""
    path = Path(path)
    if path.suffix == ".jsonl":
        rows = []
        for number, line in _lines(path):
            if line.strip():
                try:
                    rows.append((number, json.loads(line)))
                except json.JSONDecodeError as err:
                    raise FinetuneDataError(f"{path}:{number}: not JSON: {err.msg}") from None
    else:
        text = path.read_text(encoding="utf-8")
        reader = csv.DictReader(text.splitlines(), delimiter="\t" if path.suffix in (".tsv", ".tab") else ",")
        rows = [(number + 2, row) for number, row in enumerate(reader)]  # line 1 is the header
    examples = []
    for number, row in rows:
        missing = [f for f in (text_field, pair_field, label_field) if f and (row.get(f) in (None, ""))]
        if missing:
            raise FinetuneDataError(f"{path}:{number}: no value for {', '.join(missing)} (fields: "
                                    f"{', '.join(map(str, row))}); choose them with --text-field/--pair-field/"
                                    f"--label-field")
        examples.append(SentenceExample(str(row[text_field]), str(row[pair_field]) if pair_field else None,
                                        str(row[label_field]), number))
    return _nonempty(examples, path)


def _lines(path: Path):
    if not path.is_file():
        raise FinetuneDataError(f"{path}: file not found")
    try:
        with open(path, encoding="utf-8") as handle:
            yield from enumerate(handle, start=1)
    except UnicodeDecodeError as err:
        raise FinetuneDataError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None


def _nonempty(items: list, path: Path) -> list:
    if not items:
        raise FinetuneDataError(f"{path}: no examples in the file")
    return items


def check_labels(sentences_or_labels, known: set[str], path: str | Path) -> None:
    """Labels of dev/test data must occur in the training data (the head has no output for others)."""
    for item in sentences_or_labels:
        labels = item.tags if isinstance(item, TaggedSentence) else [item.label]
        unknown = sorted(set(labels) - known)
        if unknown:
            raise FinetuneDataError(f"{path}:{item.line}: label(s) {', '.join(unknown)} never occur in the training "
                                    f"data (known: {', '.join(sorted(known))})")
