"""SentencePiece unigram vocabularies in ALBERT's layout, saved so transformers' AlbertTokenizer reproduces
the ids of the sentencepiece library exactly.

ALBERT's ids: <pad> 0, <unk> 1, [CLS] 2, [SEP] 3, [MASK] 4 (control symbols: never produced from text).
Choices that keep transformers and sentencepiece in agreement: the `nmt_nfkc` rule (keeps case and
accents, folds full-width forms), no byte fallback and no user-defined symbols (transformers' Albert
tokenizer supports neither), and the same text preparation on both sides (`sentencepiece_text`).
Training is reproducible: a fixed thread count and no sampling inside sentencepiece.
"""
from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Iterator

from electra_jax.data.text_tokenizer import sentencepiece_text

CONTROL_SYMBOLS = ("[CLS]", "[SEP]", "[MASK]")
TRAINING_THREADS = 16  # fixed: sentencepiece's result depends on its thread count
MAX_SENTENCE_BYTES = 1 << 16  # longer lines would be skipped by sentencepiece (default 4192)


def train_sentencepiece(lines: Iterator[str], vocab_size: int, *, lowercase: bool = False, strip_accents: bool = False,
                        unused: int = 0, character_coverage: float = 1.0) -> bytes:
    """The serialized model (the bytes of spiece.model)."""
    import sentencepiece
    model = io.BytesIO()
    prepared = (piece for line in lines
                for piece in _pieces(sentencepiece_text(line, lowercase=lowercase, keep_accents=not strip_accents)))
    try:
        _train(sentencepiece, prepared, model, vocab_size, unused, character_coverage)
    except RuntimeError as err:  # how sentencepiece reports settings the corpus cannot meet
        reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
        raise SentencePieceError(f"sentencepiece could not train on this corpus: {reason}") from None
    return model.getvalue()


class SentencePieceError(ValueError):
    pass


def _train(sentencepiece, prepared, model, vocab_size: int, unused: int, character_coverage: float) -> None:
    sentencepiece.SentencePieceTrainer.train(
        sentence_iterator=prepared, model_writer=model, model_type="unigram",
        vocab_size=vocab_size, pad_id=0, pad_piece="<pad>", unk_id=1, unk_piece="<unk>", bos_id=-1, eos_id=-1,
        control_symbols=[*CONTROL_SYMBOLS, *(f"[unused{i}]" for i in range(unused))],
        normalization_rule_name="nmt_nfkc", character_coverage=character_coverage, input_sentence_size=0,
        shuffle_input_sentence=False, max_sentence_length=MAX_SENTENCE_BYTES, num_threads=TRAINING_THREADS,
        minloglevel=2)


def _pieces(line: str) -> list[str]:
    """A line in pieces of at most MAX_SENTENCE_BYTES of UTF-8 (cut at spaces): sentencepiece would skip it."""
    pieces, current, size = [], [], 0
    for word in line.split(" "):
        if current and size + len(word.encode()) + 1 > MAX_SENTENCE_BYTES:
            pieces.append(" ".join(current))
            current, size = [], 0
        current.append(word[:MAX_SENTENCE_BYTES // 4])  # a single word longer than that is cut
        size += len(current[-1].encode()) + 1
    return [*pieces, " ".join(current)] if current else pieces


def save_sentencepiece(model: bytes, out_dir: str | Path, *, lowercase: bool, strip_accents: bool) -> None:
    """spiece.model plus a tokenizer_config.json that states every choice: transformers' defaults
    (do_lower_case true, keep_accents false) would lower-case and strip the accents of a cased model."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "spiece.model").write_bytes(model)
    specials = {"unk_token": "<unk>", "pad_token": "<pad>", "cls_token": "[CLS]", "sep_token": "[SEP]",
                "mask_token": "[MASK]", "bos_token": "[CLS]", "eos_token": "[SEP]"}
    config = {"tokenizer_class": "AlbertTokenizer", "do_lower_case": lowercase, "keep_accents": not strip_accents,
              "remove_space": True, **specials,
              "model_input_names": ["input_ids", "token_type_ids", "attention_mask"], "model_max_length": 512}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps(specials, indent=2) + "\n")
