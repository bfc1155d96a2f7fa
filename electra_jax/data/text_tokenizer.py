"""One interface over the two tokenizer folders the project writes: WordPiece (`tokenizer.json`) for ELECTRA
and BERT, SentencePiece (`spiece.model`) for ALBERT. Preparation, the coverage report and the checks that
prepared data matches a model use only this.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np

# The files that define each kind; copied verbatim so a copy has the same fingerprint.
WORDPIECE_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json")
SENTENCEPIECE_FILES = ("spiece.model", "tokenizer_config.json", "special_tokens_map.json")
ALBERT_PUNCTUATION = frozenset('!"#$%&"()*+,-./:;?@[\\]^_`{|}~')


@dataclasses.dataclass(frozen=True)
class SpecialIds:
    pad: int
    unk: int
    cls: int
    sep: int
    mask: int


class WordPieceText:
    kind = "wordpiece"

    def __init__(self, folder: Path):
        from electra_jax.data.tokenizer import load_tokenizer
        self.folder = folder
        self.tokenizer = load_tokenizer(folder)
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.specials = SpecialIds(*(self.tokenizer.token_to_id(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")))
        # What decides the ids: the vocabulary and the normalisation (not formatting or file order).
        spec = json.loads(self.tokenizer.to_str())
        canonical = {key: spec.get(key) for key in ("model", "normalizer", "pre_tokenizer")}
        self.fingerprint = _sha256(json.dumps(canonical, sort_keys=True).encode())

    def encode_lines(self, lines: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(lines, add_special_tokens=False)]

    def encode_with_offsets(self, lines: list[str]) -> list[list[tuple[int, int, int]]]:
        """Per line, (id, first character, last character + 1) of each token in that line."""
        return [[(i, start, end) for i, (start, end) in zip(e.ids, e.offsets)]
                for e in self.tokenizer.encode_batch(lines, add_special_tokens=False)]

    def word_starts(self) -> np.ndarray:
        """Per id: does the token begin a word (is it not a "##" continuation)?"""
        starts = np.ones(self.vocab_size, bool)
        for token, i in self.tokenizer.get_vocab().items():
            starts[i] = not token.startswith("##")
        return starts


class SentencePieceText:
    """Encodes as transformers' AlbertTokenizer does: spaces collapsed, optional accent stripping and
    lower-casing before SentencePiece (the tokenizer_config.json says which)."""
    kind = "sentencepiece"

    def __init__(self, folder: Path):
        import sentencepiece
        self.folder = folder
        model_bytes = (folder / "spiece.model").read_bytes()
        self.processor = sentencepiece.SentencePieceProcessor(model_proto=model_bytes)
        settings = json.loads((folder / "tokenizer_config.json").read_text()) if (
            folder / "tokenizer_config.json").is_file() else {}
        self.lowercase = bool(settings.get("do_lower_case", False))
        self.keep_accents = bool(settings.get("keep_accents", True))
        self.vocab_size = self.processor.get_piece_size()
        ids = {piece: self.processor.piece_to_id(piece) for piece in ("<pad>", "<unk>", "[CLS]", "[SEP]", "[MASK]")}
        missing = [piece for piece, i in ids.items() if self.processor.id_to_piece(i) != piece]
        if missing:
            raise ValueError(f"tokenizer: {folder / 'spiece.model'} lacks the pieces {missing}")
        self.specials = SpecialIds(*ids.values())
        flags = json.dumps({"lowercase": self.lowercase, "keep_accents": self.keep_accents}).encode()
        self.fingerprint = _sha256(model_bytes + flags)

    def encode_lines(self, lines: list[str]) -> list[list[int]]:
        prepared = [sentencepiece_text(line, lowercase=self.lowercase, keep_accents=self.keep_accents)
                    for line in lines]
        return self.processor.encode(prepared, out_type=int)

    def encode_with_offsets(self, lines: list[str]) -> list[list[tuple[int, int, int]]]:
        """Per line, (id, first character, last character + 1) of each piece in that line. Where the text
        preparation changes a line's length (accents stripped), every piece spans the whole line: a line here is
        one word, so an answer then ends at word boundaries. (Lower-casing keeps the characters in place.)"""
        encoded = []
        for line in lines:
            prepared = sentencepiece_text(line, lowercase=self.lowercase, keep_accents=self.keep_accents)
            pieces = self.processor.encode(prepared, out_type="proto").pieces  # begin/end: bytes of `prepared`
            if len(prepared) != len(line) or prepared != (line.lower() if self.lowercase else line):
                encoded.append([(piece.id, 0, len(line)) for piece in pieces])
                continue
            chars = np.cumsum([0] + [len(c.encode()) for c in prepared])  # byte offset of each character
            encoded.append([(piece.id, int(np.searchsorted(chars, piece.begin)), int(np.searchsorted(chars, piece.end)))
                            for piece in pieces])
        return encoded

    def word_starts(self) -> np.ndarray:
        """Per id: does the piece begin a word? As google-research/albert's is_start_piece: pieces with the
        "▁" prefix, control pieces and single punctuation marks."""
        pieces = [self.processor.id_to_piece(i) for i in range(self.vocab_size)]
        return np.array([p.startswith(("▁", "<", "[")) or p in ALBERT_PUNCTUATION for p in pieces])


def sentencepiece_text(line: str, *, lowercase: bool, keep_accents: bool) -> str:
    """What transformers' AlbertTokenizer does to text before SentencePiece sees it."""
    line = " ".join(line.split()).replace("``", '"').replace("''", '"')
    if not keep_accents:
        line = "".join(c for c in unicodedata.normalize("NFKD", line) if not unicodedata.combining(c))
    return line.lower() if lowercase else line


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def tokenizer_kind(folder: str | Path) -> str:
    folder = Path(folder)
    if (folder / "spiece.model").is_file():  # first: transformers may add a tokenizer.json beside it
        return "sentencepiece"
    if (folder / "tokenizer.json").is_file():
        return "wordpiece"
    raise FileNotFoundError(f"tokenizer: {folder} has neither tokenizer.json (WordPiece) nor spiece.model "
                            f"(SentencePiece); make one with `electra-jax tokenizer train`")


def load_text_tokenizer(folder: str | Path) -> WordPieceText | SentencePieceText:
    folder = Path(folder)
    if folder.is_file():  # a tokenizer.json given directly
        folder = folder.parent
    return WordPieceText(folder) if tokenizer_kind(folder) == "wordpiece" else SentencePieceText(folder)


def copy_tokenizer(source: str | Path, destination: str | Path) -> None:
    """The defining files, byte for byte."""
    source, destination = Path(source), Path(destination)
    if source.is_file():
        source = source.parent
    names = WORDPIECE_FILES if tokenizer_kind(source) == "wordpiece" else SENTENCEPIECE_FILES
    destination.mkdir(parents=True, exist_ok=True)
    for name in names:
        if (source / name).is_file():
            shutil.copyfile(source / name, destination / name)
