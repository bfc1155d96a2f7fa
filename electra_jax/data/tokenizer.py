"""WordPiece tokenizer training with the `tokenizers` library.

Lower-casing and accent stripping are two independent switches (the original BERT/ELECTRA tooling
tied them together and silently stripped å, ø, ñ from cased vocabularies). Default: cased, accents kept.
"""
from __future__ import annotations

import collections
import json
import re
import unicodedata
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from electra_jax.data.sources import SkipReport

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_UNUSED = re.compile(r"\[unused\d+\]")


def unused_tokens(count: int) -> list[str]:
    """BERT's reserved slots: ids a user can later give to domain words without resizing the model."""
    return [f"[unused{i}]" for i in range(count)]


MAX_WORD_CHARS = 100  # the WordPiece model's max_input_chars_per_word: a longer word encodes as one [UNK]
MAX_TRAINER_LINE_CHARS = 500  # longer lines reach the trainer in pieces, cut between words: the
# trainer counts words, so where a line is cut changes nothing, but its memory grows with the length of a line
_PUNCTUATION = re.compile(r"([^\w\s])")  # kept as pieces of their own


def train_wordpiece(lines: Sequence[str | Path] | Callable[[], Iterable[str]], vocab_size: int, *,
                    lowercase: bool = False, strip_accents: bool = False, min_frequency: int = 2,
                    limit_alphabet: int | None = None, unused: int = 0, report: SkipReport | None = None) -> Tokenizer:
    """Train on text files (paths, read through `sources`' reader) or on `lines()`, a function giving the same
    lines each time it is called: the corpus is read twice, once for its alphabet and once to train.

    The same corpus and options give the same vocabulary, byte for byte. The `tokenizers` trainer breaks ties
    between equally frequent pairs by token id, and it numbers each continuation piece "##c" when it first
    meets it while walking a hash map (tokenizers issue #1794), so ties fell differently from run to run.
    Here every "##c" of the alphabet is named to the trainer up front, in sorted order, so the trainer's
    ids, and with them every tie, are fixed. With `limit_alphabet` the kept characters are chosen here too
    (most frequent first, ties by code point): the trainer's own choice breaks count ties by hash order."""
    report = SkipReport() if report is None else report
    if not callable(lines):
        lines = _file_lines([str(f) for f in lines])
    reserved = [*SPECIAL_TOKENS, *unused_tokens(unused)]
    tokenizer = wordpiece_from_vocab({token: i for i, token in enumerate(reserved)}, lowercase=lowercase,
                                     strip_accents=strip_accents)
    alphabet = _alphabet(tokenizer.normalizer, _trainer_lines(lines(), SkipReport()))
    kept = sorted(alphabet, key=lambda c: (-alphabet[c], c))[:limit_alphabet] if limit_alphabet else list(alphabet)
    continuations = [f"##{c}" for c in sorted(kept) if not _stands_alone(c)]
    options = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet, "initial_alphabet": kept}
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=[*reserved, *continuations], continuing_subword_prefix="##",
                                        show_progress=False, **options)
    tokenizer.train_from_iterator(_trainer_lines(lines(), report), trainer)
    # Ids in a fixed order (the trainer's own follow the same hash-map walk): single characters, then
    # continuation characters, then longer pieces, each alphabetical.
    pieces = [t for t in tokenizer.get_vocab() if t not in reserved]
    pieces.sort(key=lambda t: (len(t.removeprefix("##")) > 1, t.startswith("##"), t))
    vocab = {token: i for i, token in enumerate([*reserved, *pieces])}
    return wordpiece_from_vocab(vocab, lowercase=lowercase, strip_accents=strip_accents)


def _file_lines(paths: list[str]) -> Callable[[], Iterator[str]]:
    from electra_jax.data.sources import parse_source, read_documents
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"tokenizer: input file not found: {path}")
    sources = [parse_source(path) for path in paths]
    return lambda: (line for document in read_documents(sources, SkipReport()) for line in document)


def _trainer_lines(lines: Iterable[str], report: SkipReport) -> Iterator[str]:
    """The lines as the trainer should see them: in pieces of at most MAX_TRAINER_LINE_CHARS (cut between
    words), without words over MAX_WORD_CHARS (counted in `report`). The model encodes such a word as one
    [UNK], so it teaches the vocabulary nothing, while the trainer's time grows with the square of a
    word's length."""
    for line in lines:
        words = line.split()
        if not words:
            continue
        if max(map(len, words)) > MAX_WORD_CHARS:
            words = _short_words(words, report)
        piece, size = [], 0
        for word in words:
            if size + len(word) > MAX_TRAINER_LINE_CHARS and piece:
                yield " ".join(piece)
                piece, size = [], 0
            piece.append(word)
            size += len(word) + 1
        if piece:
            yield " ".join(piece)


def _short_words(words: list[str], report: SkipReport) -> list[str]:
    """`words` with each one over MAX_WORD_CHARS cut at its punctuation (as the pre-tokenizer would) and the
    pieces still too long left out."""
    kept = []
    for word in words:
        if len(word) <= MAX_WORD_CHARS:
            kept.append(word)
            continue
        for part in filter(None, _PUNCTUATION.split(word)):
            if len(part) <= MAX_WORD_CHARS:
                kept.append(part)
            else:
                report.overlong_words_dropped += 1
    return kept


def _alphabet(normalizer, lines: Iterable[str]) -> collections.Counter:
    """How often each character occurs in the words the trainer sees (normalised text, no whitespace)."""
    counts: collections.Counter = collections.Counter()
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) == 1024:
            counts.update(normalizer.normalize_str("\n".join(batch)))
            batch = []
    counts.update(normalizer.normalize_str("\n".join(batch)))
    for c in [c for c in counts if c.isspace()]:
        del counts[c]
    return counts


def _stands_alone(c: str) -> bool:
    """Punctuation and CJK ideographs are words of their own (BertPreTokenizer, BertNormalizer): no "##c"."""
    code = ord(c)
    return (unicodedata.category(c).startswith("P") or 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96
            or 123 <= code <= 126 or 0x4E00 <= code <= 0x9FFF or 0x3400 <= code <= 0x4DBF or 0x20000 <= code <= 0x2A6DF
            or 0x2A700 <= code <= 0x2CEAF or 0xF900 <= code <= 0xFAFF or 0x2F800 <= code <= 0x2FA1F)


def wordpiece_from_vocab(vocab: dict[str, int], *, lowercase: bool, strip_accents: bool) -> Tokenizer:
    """A BERT-style WordPiece tokenizer over a fixed vocabulary ([CLS] A [SEP] B [SEP] templates)."""
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]", continuing_subword_prefix="##",
                                           max_input_chars_per_word=100))
    # Never split, skipped by decode: the special tokens and the reserved [unusedN] slots.
    tokenizer.add_special_tokens([token for token in vocab if token in SPECIAL_TOKENS or _UNUSED.fullmatch(token)])
    # strip_accents must be an explicit bool: None would make it follow `lowercase`.
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=bool(strip_accents), lowercase=bool(lowercase))
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    cls_id, sep_id = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)])
    return tokenizer


def save_tokenizer(tokenizer: Tokenizer, out_dir: str | Path, tokenizer_class: str = "ElectraTokenizer") -> dict:
    """tokenizer.json, vocab.txt and a tokenizer_config.json that states every normalisation choice
    (transformers 5 rebuilds the normaliser from do_lower_case/strip_accents, whose defaults are True/None).
    Returns the two choices."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    (out / "vocab.txt").write_text("".join(f"{token}\n" for token, _ in vocab), encoding="utf-8")
    normalizer = tokenizer.normalizer
    lowercase, strip_accents = bool(normalizer.lowercase), bool(normalizer.strip_accents)
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    config = {"tokenizer_class": tokenizer_class, "do_lower_case": lowercase, "strip_accents": strip_accents,
              "tokenize_chinese_chars": True, "model_max_length": 512, **specials}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
    return {"lowercase": lowercase, "strip_accents": strip_accents}


def load_tokenizer(path: str | Path) -> Tokenizer:
    path = Path(path)
    if path.is_dir():
        path = path / "tokenizer.json"
    if not path.is_file():
        raise FileNotFoundError(f"tokenizer: {path} not found (give a tokenizer.json or the folder holding it)")
    tokenizer = Tokenizer.from_file(str(path))
    missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
    if missing:
        raise ValueError(f"tokenizer: {path} lacks the special tokens {missing}")
    return tokenizer
