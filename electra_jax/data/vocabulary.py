"""`electra-jax tokenizer train`: a WordPiece or SentencePiece vocabulary from any corpus source, with a
coverage report.

Every `HELDOUT_EVERY`-th line is kept out of training (up to `HELDOUT_MAX` lines) and used to measure the
unknown-token rate; the letters of the training lines are counted so the report can name any the
vocabulary lost (the trap of the original tooling: a "cased" vocabulary that silently lost å, ø, ñ).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import random
import unicodedata
from pathlib import Path
from typing import Iterator

from electra_jax.data.sources import SkipReport, check_source, parse_source, read_documents, skipped_line
from electra_jax.data.text_tokenizer import load_text_tokenizer
from electra_jax.storage import staged_folder

HELDOUT_EVERY = 100
HELDOUT_MAX = 20_000
KINDS = ("wordpiece", "sentencepiece")


@dataclasses.dataclass(frozen=True)
class VocabularyOptions:
    kind: str = "wordpiece"
    vocab_size: int = 30522
    lowercase: bool = False
    strip_accents: bool = False
    limit_alphabet: int | None = None  # WordPiece: the most frequent characters kept
    unused: int = 0  # [unusedN] slots reserved after the special tokens
    min_frequency: int = 2  # WordPiece
    character_coverage: float = 1.0  # SentencePiece: 0.9995 suits CJK scripts
    max_lines: int = 0  # train on at most this many lines (0: all)
    text_field: str = "text"
    tfds_data_dir: str | None = None


class VocabularyError(ValueError):
    pass


def _check(options: VocabularyOptions) -> None:
    if options.kind not in KINDS:
        raise VocabularyError(f"tokenizer: --kind must be wordpiece or sentencepiece, got {options.kind!r}")
    if options.vocab_size < 100:
        raise VocabularyError(f"tokenizer: --vocab-size must be at least 100, got {options.vocab_size}")
    if options.unused < 0 or options.unused >= options.vocab_size // 2:
        raise VocabularyError(f"tokenizer: --unused must be in [0, vocab size / 2), got {options.unused}")
    if options.kind == "sentencepiece" and options.limit_alphabet is not None:
        raise VocabularyError("tokenizer: --limit-alphabet is a WordPiece option; for SentencePiece use "
                              "--character-coverage")
    if options.limit_alphabet is not None and options.limit_alphabet < 1:
        raise VocabularyError(f"tokenizer: --limit-alphabet must be positive, got {options.limit_alphabet}")
    if not 0.9 <= options.character_coverage <= 1.0:
        raise VocabularyError(f"tokenizer: --character-coverage must be in [0.9, 1], got {options.character_coverage}")


class _Splitter:
    """Splits a line stream into training lines and a held-out slice; counts the letters of the corpus.

    With `max_lines`, the training lines are a uniform, seeded sample of that many (a reservoir: memory
    is bounded by the sample, and the result does not depend on the corpus order within the sample)."""

    def __init__(self, max_lines: int, seed: int = 0):
        self.max_lines, self.rng = max_lines, random.Random(seed)
        self.heldout: list[str] = []
        self.letters: collections.Counter = collections.Counter()
        self.trained = 0

    def _split(self, lines: Iterator[str]) -> Iterator[str]:
        for index, line in enumerate(lines):
            if index % HELDOUT_EVERY == HELDOUT_EVERY - 1 and len(self.heldout) < HELDOUT_MAX:
                self.heldout.append(line)
                continue
            self.letters.update(line)
            yield line

    def training_lines(self, lines: Iterator[str]) -> Iterator[str]:
        if not self.max_lines:
            for line in self._split(lines):
                self.trained += 1
                yield line
            return
        sample: list[str] = []
        for seen, line in enumerate(self._split(lines)):
            if seen < self.max_lines:
                sample.append(line)
            elif (slot := self.rng.randrange(seen + 1)) < self.max_lines:
                sample[slot] = line
        self.trained = len(sample)
        yield from sample


def train_vocabulary(inputs: list[str], out_dir: str | Path, options: VocabularyOptions = VocabularyOptions(),
                     log=print) -> dict:
    """Train, save to `out_dir` (a new or empty folder) and return the coverage report."""
    _check(options)
    out_dir = Path(out_dir)
    sources = [parse_source(spec) for spec in inputs]
    for source in sources:
        check_source(source, options.text_field, options.tfds_data_dir)
    passes: list[tuple[SkipReport, _Splitter]] = []

    def training_lines() -> Iterator[str]:
        """The training lines, from a fresh read of the sources (WordPiece reads them twice)."""
        passes.append((SkipReport(), _Splitter(options.max_lines)))
        report, splitter = passes[-1]
        documents = read_documents(sources, report, text_field=options.text_field, tfds_data_dir=options.tfds_data_dir)
        return splitter.training_lines(line for document in documents for line in document)

    dropped_words = SkipReport()  # what the WordPiece trainer was not shown
    with staged_folder(out_dir, "tokenizer train") as staging:
        if options.kind == "wordpiece":
            from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
            tokenizer = train_wordpiece(training_lines, options.vocab_size, lowercase=options.lowercase,
                                        strip_accents=options.strip_accents, min_frequency=options.min_frequency,
                                        limit_alphabet=options.limit_alphabet, unused=options.unused,
                                        report=dropped_words)
            save_tokenizer(tokenizer, staging)
        else:
            from electra_jax.data.spm import SentencePieceError, save_sentencepiece, train_sentencepiece
            try:
                model = train_sentencepiece(training_lines(), options.vocab_size, lowercase=options.lowercase,
                                            strip_accents=options.strip_accents, unused=options.unused,
                                            character_coverage=options.character_coverage)
            except SentencePieceError as err:
                if not passes[-1][1].trained:
                    raise VocabularyError(f"tokenizer: no text found in {', '.join(inputs)}") from None
                raise VocabularyError(f"tokenizer: {err}") from None
            save_sentencepiece(model, staging, lowercase=options.lowercase, strip_accents=options.strip_accents)
        report, splitter = passes[-1]
        report.overlong_words_dropped = dropped_words.overlong_words_dropped
        if not splitter.trained:
            skipped = skipped_line(report.as_dict())
            raise VocabularyError(f"tokenizer: no text found in {', '.join(inputs)}"
                                  f"{f' (skipped: {skipped})' if skipped else ''}")
        coverage = coverage_report(load_text_tokenizer(staging), splitter.heldout, splitter.letters)
        coverage.update(trained_lines=splitter.trained, skipped=report.as_dict())
        (staging / "coverage.json").write_text(json.dumps(coverage, indent=2, ensure_ascii=False) + "\n")
    for line in coverage_lines(coverage, out_dir):
        log(line)
    return coverage


def coverage_report(tokenizer, heldout: list[str], letters: collections.Counter) -> dict:
    """Unknown-token rate and tokens per word on the held-out lines; the corpus letters the vocabulary lost."""
    unk = tokenizer.specials.unk
    encoded = tokenizer.encode_lines(heldout) if heldout else []
    tokens = sum(len(ids) for ids in encoded)
    unknown = sum(ids.count(unk) for ids in encoded)
    words = sum(len(line.split()) for line in heldout)
    corpus_letters = {c: n for c, n in letters.items() if unicodedata.category(c).startswith("L")}
    candidates = sorted(corpus_letters)
    lost = [c for c, ids in zip(candidates, tokenizer.encode_lines(candidates)) if unk in ids or not ids]
    lost.sort(key=lambda c: -corpus_letters[c])
    total_letters = sum(corpus_letters.values())
    return {
        "vocab_size": tokenizer.vocab_size,
        "heldout_lines": len(heldout),
        "heldout_tokens": tokens,
        "unknown_rate": unknown / tokens if tokens else 0.0,
        "tokens_per_word": tokens / words if words else 0.0,
        "letters": len(corpus_letters),
        "lost_letters": {c: corpus_letters[c] for c in lost},
        "lost_letter_fraction": sum(corpus_letters[c] for c in lost) / total_letters if total_letters else 0.0,
    }


def coverage_lines(coverage: dict, out_dir: Path) -> list[str]:
    lost = coverage["lost_letters"]
    shown = ", ".join(f"{c} (U+{ord(c):04X}, {n}x)" for c, n in list(lost.items())[:20])
    return [
        f"vocabulary of {coverage['vocab_size']:,} tokens written to {out_dir} (trained on "
        f"{coverage['trained_lines']:,} lines)",
        (f"held-out {coverage['heldout_lines']:,} lines: unknown-token rate {coverage['unknown_rate']:.3%}, "
         f"{coverage['tokens_per_word']:.2f} tokens per word") if coverage["heldout_lines"] else
        f"no held-out lines (the corpus has fewer than {HELDOUT_EVERY}): unknown-token rate not measured",
        (f"letters lost ({len(lost)} of {coverage['letters']}, {coverage['lost_letter_fraction']:.4%} of the "
         f"letters in the corpus): {shown}{', ...' if len(lost) > 20 else ''}") if lost else
        f"letters lost: none (all {coverage['letters']} letters of the corpus are in the vocabulary)",
        f"skipped or repaired: {skipped_line(coverage['skipped']) or 'nothing'}",
    ]
