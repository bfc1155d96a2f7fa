"""Tokenized documents -> fixed-length training examples, in the two layouts the models train on.

ELECTRA (google-research/electra build_pretraining_dataset.ExampleBuilder): lines of a document are
accumulated until a target length is reached, then split at a line boundary into [CLS] A [SEP] B [SEP];
10% of examples keep everything in segment A, 5% draw a random shorter target; tokens past the sequence
length start the next example of the document (the original dropped them). ALBERT (google-research/albert
create_instances_from_document): lines are gathered into chunks, each chunk split into A and B at a random
line (or inside the line when the chunk has one) and, for sentence-order prediction, half of the pairs are
swapped (label 1). Neither layout lets an example span two documents.

A record is one array of token ids (uint16, or uint32 for vocabularies over 65,535):
`[length of "[CLS] A [SEP]", label, ids...]`, unpadded; the label is the SOP label (0 for ELECTRA).
"""
from __future__ import annotations

import collections
import random

import numpy as np

HEADER = 2  # first-segment length, label


def record_dtype(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 65_536 else np.uint32)


def encode_record(ids: list[int], first_length: int, label: int, dtype: np.dtype) -> bytes:
    return np.asarray([first_length, label, *ids], dtype).tobytes()


def decode_record(record: bytes, dtype: np.dtype, seq_len: int, pad_id: int) -> dict[str, np.ndarray]:
    """Padded `input_ids`, `segment_ids` (0 for [CLS] A [SEP], 1 after) and the SOP `label`."""
    values = np.frombuffer(record, dtype)
    ids = values[HEADER:]
    input_ids = np.full(seq_len, pad_id, np.int32)
    input_ids[:len(ids)] = ids
    segment_ids = np.zeros(seq_len, np.int32)
    segment_ids[int(values[0]):len(ids)] = 1
    return {"input_ids": input_ids, "segment_ids": segment_ids, "sop_label": np.int32(values[1])}


class Packer:
    """Packs the documents of one work unit; `stats` counts what happened (examples, trims, ...)."""

    def __init__(self, seq_len: int, cls_id: int, sep_id: int, dtype: np.dtype, rng: random.Random,
                 short_seq_prob: float, single_segment_prob: float = 0.0):
        self.seq_len, self.cls_id, self.sep_id, self.dtype = seq_len, cls_id, sep_id, dtype
        self.rng, self.short_seq_prob, self.single_segment_prob = rng, short_seq_prob, single_segment_prob
        self.stats: collections.Counter = collections.Counter()
        self.records: list[bytes] = []

    def _emit(self, first: list[int], second: list[int], label: int = 0) -> None:
        ids = [self.cls_id, *first, self.sep_id]
        first_length = len(ids)
        if second:
            ids += [*second, self.sep_id]
        else:
            self.stats["single_segment"] += 1
        self.records.append(encode_record(ids, first_length, label, self.dtype))
        self.stats["examples"] += 1
        self.stats["tokens"] += len(ids)

    def add_document(self, lines: list[list[int]]) -> None:
        self.stats["documents"] += 1
        pieces = [line[i:i + self.piece_length] for line in lines for i in range(0, len(line), self.piece_length)]
        if not pieces:
            self.stats["empty_documents"] += 1
            return
        self._pack(pieces)


class ElectraPacker(Packer):
    @property
    def piece_length(self) -> int:  # a line longer than an example is cut into example-sized pieces
        return self.seq_len - 2

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.target = self.seq_len  # the first example aims at the full length, as in the original

    def _draw_target(self) -> int:
        if self.rng.random() < self.short_seq_prob:
            self.stats["short_target"] += 1
            return self.rng.randint(5, self.seq_len)
        return self.seq_len

    def _pack(self, lines: list[list[int]]) -> None:
        current, length = [], 0
        for line in lines:
            current.append(line)
            length += len(line)
            while length >= self.target:
                current = self._create(current)
                length = sum(map(len, current))
        while current:  # the document ends: its last example is shorter
            current = self._create(current)

    def _create(self, lines: list[list[int]]) -> list[list[int]]:
        """Emits one example; returns what did not fit (as one line) for the next example."""
        first_target = 100_000 if self.rng.random() < self.single_segment_prob else (self.target - 3) // 2
        first: list[int] = []
        second: list[int] = []
        for ids in lines:
            # A line joins segment A if A is empty, if it fits, or (half the time) if it overflows A; otherwise
            # it goes to B. Unlike the original, once B has begun every later line follows it (the original
            # could move a later, shorter line back into A, out of the document's order).
            if not second and (not first or len(first) + len(ids) < first_target
                               or (len(first) < first_target and self.rng.random() < 0.5)):
                first += ids
            else:
                second += ids
        kept_first = first[:self.seq_len - 2]
        kept_second = second[:max(0, self.seq_len - len(kept_first) - 3)]
        # The original drops the tokens past the sequence length (about a tenth of a corpus of long lines);
        # here they start the next example of the same document. They are a suffix in document order.
        overflow = first[len(kept_first):] + second[len(kept_second):]
        self._emit(kept_first, kept_second)
        self.target = self._draw_target()  # the original draws the next target after each example
        return [overflow] if overflow else []


class AlbertPacker(Packer):
    @property
    def piece_length(self) -> int:
        return self.seq_len - 3

    def _draw_target(self) -> int:
        if self.rng.random() < self.short_seq_prob:
            self.stats["short_target"] += 1
            return self.rng.randint(2, self.seq_len - 3)
        return self.seq_len - 3

    def _pack(self, pieces: list[list[int]]) -> None:
        target, chunk, length = self._draw_target(), [], 0
        for index, piece in enumerate(pieces):
            chunk.append(piece)
            length += len(piece)
            if index == len(pieces) - 1 or length >= target:
                self._create(chunk)
                target, chunk, length = self._draw_target(), [], 0

    def _create(self, chunk: list[list[int]]) -> None:
        if len(chunk) >= 2:
            cut = self.rng.randint(1, len(chunk) - 1)
            first, second = sum(chunk[:cut], []), sum(chunk[cut:], [])
        else:  # one line: the pair is its two halves, cut at a random token
            tokens = chunk[0]
            if len(tokens) < 2:
                self.stats["too_short_for_a_pair"] += 1
                self.stats["trimmed_tokens"] += len(tokens)
                return
            cut = self.rng.randint(1, len(tokens) - 1)
            first, second = tokens[:cut], tokens[cut:]
        label = int(self.rng.random() < 0.5)
        if label:
            first, second = second, first
            self.stats["swapped"] += 1
        self.stats["trimmed_tokens"] += _truncate_pair(first, second, self.seq_len - 3, self.rng)
        self._emit(first, second, label)


def _truncate_pair(first: list[int], second: list[int], max_tokens: int, rng: random.Random) -> int:
    """ALBERT's truncate_seq_pair: drop tokens from the longer side, at its front or back at random."""
    removed = 0
    while len(first) + len(second) > max_tokens:
        longer = first if len(first) > len(second) else second
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()
        removed += 1
    return removed


PACKERS = {"electra": ElectraPacker, "albert": AlbertPacker}
