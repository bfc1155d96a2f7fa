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
    lines: list[int] = dataclasses.field(default_factory=list)  # of each token, for messages

    @property
    def line(self) -> int:
        return self.lines[0] if self.lines else 0


def _tagged_sentences(path: Path, word) -> list[TaggedSentence]:
    """Blank lines end sentences; `word(number, line, stripped)` gives (token, tag), or None to skip the line."""
    sentences, tokens, tags, lines = [], [], [], []
    for number, line in _lines(path):
        stripped = line.strip()
        if not stripped:
            if tokens:
                sentences.append(TaggedSentence(tokens, tags, lines))
                tokens, tags, lines = [], [], []
            continue
        pair = word(number, line, stripped)
        if pair is None:
            continue
        tokens.append(pair[0])
        tags.append(pair[1])
        lines.append(number)
    if tokens:
        sentences.append(TaggedSentence(tokens, tags, lines))
    return _nonempty(sentences, path)


def read_columns(path: str | Path, column: int | None = 1, skipped: list[int] | None = None, token_column: int = 0,
                 check_tag=None, spaces: list[int] | None = None) -> list[TaggedSentence]:
    """The token in `token_column`, its tag in `column` (both 0-based), tab or space separated; blank lines end
    sentences. Skipped: `-DOCSTART-` lines; comments (`# id = ...`, KLUE's `## ...`, and with an index column
    before the token, as GermEval 2014 has, every line starting with `#`); whitespace-only tokens (the spaces of
    character-level files such as KLUE's, which no subword model predicts), their line numbers appended to
    `spaces`. A line without the tag column is an error, or, when a `skipped` list is given, left out and its
    number appended there. `check_tag(tag)` returns why a tag is wrong (an error at its line), or None.
    `column` None: tokens only (text to tag), every tag "" and other columns ignored."""
    path = Path(path)
    needed = token_column if column is None else max(column, token_column)

    def word(number, line, stripped):
        if stripped.startswith("-DOCSTART-") or (stripped.startswith("#") and (
                token_column > 0 or stripped.lstrip("#").startswith(" "))):
            return None  # a hashtag token ("#dkpol", or "#" then a tab) has no space after its #s
        fields = line.rstrip("\n").split("\t") if "\t" in line else stripped.split()
        if len(fields) <= needed:
            if skipped is not None:
                skipped.append(number)
                return None
            which = "token" if column is None or column < token_column else "tag"
            raise FinetuneDataError(f"{path}:{number}: {len(fields)} column(s), no {which} column {needed} (0-based; "
                                    f"choose them with --tag-column and --token-column, or leave such lines out "
                                    f"with --skip-malformed): {stripped[:60]!r}")
        token, tag = fields[token_column].strip(), "" if column is None else fields[column].strip()
        if not token and fields[token_column] and (tag or column is None):
            if spaces is not None:
                spaces.append(number)
            return None
        if not token or (not tag and column is not None):
            raise FinetuneDataError(f"{path}:{number}: empty token or tag: {stripped[:60]!r}")
        problem = check_tag(tag) if check_tag else None
        if problem:
            raise FinetuneDataError(f"{path}:{number}: {problem}")
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


@dataclasses.dataclass
class SentenceExample:
    text: str
    pair: str | None
    label: str
    line: int = 0


def read_sentences(path: str | Path, text_field: str = "text", pair_field: str | None = None,
                   label_field: str | None = "label") -> list[SentenceExample]:
    """Single sentences or pairs with a label from CSV, TSV (header row) or JSONL (one object per line);
    `label_field` None: no labels (text to classify), every label ""."""
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
                                        str(row[label_field]) if label_field else "", number))
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
            tagged = isinstance(item, TaggedSentence) and len(item.lines) == len(labels)
            line = item.lines[labels.index(unknown[0])] if tagged else item.line
            raise FinetuneDataError(f"{path}:{line}: label(s) {', '.join(unknown)} never occur in the training "
                                    f"data (known: {', '.join(sorted(known))})")
