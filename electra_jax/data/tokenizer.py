"""WordPiece tokenizer training with the `tokenizers` library.

Lower-casing and accent stripping are two independent switches (the original BERT/ELECTRA tooling
tied them together and silently stripped å, ø, ñ from cased vocabularies). Default: cased, accents kept.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterable, Iterator

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
_UNUSED = re.compile(r"\[unused\d+\]")


def unused_tokens(count: int) -> list[str]:
    """BERT's reserved slots: ids a user can later give to domain words without resizing the model."""
    return [f"[unused{i}]" for i in range(count)]


def train_wordpiece(files_or_lines: Iterable[str | Path] | Iterator[str], vocab_size: int, *, lowercase: bool = False,
                    strip_accents: bool = False, min_frequency: int = 2, limit_alphabet: int | None = None,
                    unused: int = 0) -> Tokenizer:
    """Train on text files (a list of paths) or on an iterator of lines."""
    reserved = [*SPECIAL_TOKENS, *unused_tokens(unused)]
    tokenizer = wordpiece_from_vocab({token: i for i, token in enumerate(reserved)}, lowercase=lowercase,
                                     strip_accents=strip_accents)
    options = {} if limit_alphabet is None else {"limit_alphabet": limit_alphabet}
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=reserved,
                                        continuing_subword_prefix="##", show_progress=False, **options)
    if isinstance(files_or_lines, Iterator):
        tokenizer.train_from_iterator(files_or_lines, trainer)
    else:
        files = [str(f) for f in files_or_lines]
        for f in files:
            if not Path(f).is_file():
                raise FileNotFoundError(f"tokenizer: input file not found: {f}")
        tokenizer.train(files, trainer)
    # The trainer numbers "##" pieces in hash-map order (tokenizers issue #1794), so ids differ from run to
    # run. Matching depends only on which pieces exist: renumber them in a fixed order. (On exact frequency
    # ties the chosen pieces themselves can still differ; a run directory keeps its tokenizer for resume.)
    pieces = [t for t in tokenizer.get_vocab() if t not in reserved]
    pieces.sort(key=lambda t: (len(t.removeprefix("##")) > 1, t.startswith("##"), t))
    vocab = {token: i for i, token in enumerate([*reserved, *pieces])}
    return wordpiece_from_vocab(vocab, lowercase=lowercase, strip_accents=strip_accents)


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
