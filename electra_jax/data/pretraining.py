"""ELECTRA-style example packing and a simple, stateless in-process batch loader.

Packing follows google-research/electra build_pretraining_dataset.ExampleBuilder: lines of a
document are accumulated until the target length is reached, then split at a line boundary into
segments A and B: [CLS] A [SEP] B [SEP]. With `short_seq_prob` the target length is drawn at
random, so the model also sees short inputs. Documents are separated by blank lines.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator

import numpy as np
from tokenizers import Tokenizer


def read_documents(files, blank_lines_separate_docs: bool = True) -> Iterator[list[str]]:
    """Yield documents as lists of non-empty lines, streaming each file."""
    for path in files:
        document: list[str] = []
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                line = line.strip()
                if line:
                    document.append(line)
                elif blank_lines_separate_docs and document:
                    yield document
                    document = []
        if document:
            yield document


class ExampleBuilder:
    def __init__(self, seq_len: int, cls_id: int, sep_id: int, short_seq_prob: float, seed: int):
        self.seq_len, self.cls_id, self.sep_id = seq_len, cls_id, sep_id
        self.short_seq_prob = short_seq_prob
        self.rng = random.Random(seed)
        self.lines: list[list[int]] = []
        self.length = 0
        self.target_length = self._draw_target()

    def _draw_target(self) -> int:
        if self.rng.random() < self.short_seq_prob:
            return self.rng.randint(5, self.seq_len)
        return self.seq_len

    def add_line(self, ids: list[int]):
        """Returns a finished example (input_ids, segment_ids) or None."""
        if not ids:
            return None
        self.lines.append(ids)
        self.length += len(ids)
        if self.length >= self.target_length:
            return self._create_example()
        return None

    def end_document(self):
        return self._create_example() if self.lines else None

    def _create_example(self):
        first_target = (self.target_length - 3) // 2 if self.rng.random() < 0.5 else 100_000
        first: list[int] = []
        second: list[int] = []
        for ids in self.lines:
            if (not first or len(first) + len(ids) < first_target
                    or (not second and len(first) < first_target and self.rng.random() < 0.5)):
                first += ids
            else:
                second += ids
        first = first[: self.seq_len - 2]
        second = second[: max(0, self.seq_len - len(first) - 3)]
        input_ids = [self.cls_id, *first, self.sep_id]
        segment_ids = [0] * len(input_ids)
        if second:
            input_ids += [*second, self.sep_id]
            segment_ids += [1] * (len(second) + 1)
        self.lines, self.length = [], 0
        self.target_length = self._draw_target()
        return input_ids, segment_ids


def build_examples(files, tokenizer: Tokenizer, seq_len: int, short_seq_prob: float = 0.1, seed: int = 0,
                   blank_lines_separate_docs: bool = True, batch_lines: int = 1000) -> dict[str, np.ndarray]:
    """Tokenize and pack text files into fixed-length arrays: input_ids and segment_ids (int32, 0 = pad)."""
    builder = ExampleBuilder(seq_len, tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]"),
                             short_seq_prob, seed)
    examples: list[tuple[list[int], list[int]]] = []

    def encode(lines):
        return [e.ids for e in tokenizer.encode_batch(lines, add_special_tokens=False)]

    for document in read_documents(files, blank_lines_separate_docs):
        for start in range(0, len(document), batch_lines):
            for ids in encode(document[start:start + batch_lines]):
                # A single over-long line is cut into seq_len pieces rather than dropped.
                for piece in range(0, len(ids), seq_len - 2):
                    example = builder.add_line(ids[piece:piece + seq_len - 2])
                    if example:
                        examples.append(example)
        example = builder.end_document()
        if example:
            examples.append(example)
    if not examples:
        raise ValueError(f"data: no text found in {[str(f) for f in files]}")
    input_ids = np.zeros((len(examples), seq_len), np.int32)
    segment_ids = np.zeros((len(examples), seq_len), np.int32)
    for row, (ids, segments) in enumerate(examples):
        input_ids[row, :len(ids)] = ids
        segment_ids[row, :len(segments)] = segments
    return {"input_ids": input_ids, "segment_ids": segment_ids}


class BatchLoader:
    """Global batch for any step from (seed, step) alone: resuming needs no iterator state beyond the step.

    Each epoch is a fresh permutation; each process takes only its contiguous slice of the global batch.
    """

    def __init__(self, examples: dict[str, np.ndarray], batch_size: int, seed: int,
                 process_index: int = 0, process_count: int = 1):
        self.examples = examples
        self.num_examples = len(examples["input_ids"])
        if self.num_examples < batch_size:
            raise ValueError(f"data: {self.num_examples} packed examples is fewer than train.batch_size="
                             f"{batch_size}; give more text or a smaller batch")
        self.batch_size, self.seed = batch_size, seed
        self.batches_per_epoch = self.num_examples // batch_size
        self.local_size = batch_size // process_count
        self.local_start = process_index * self.local_size
        self._permutation_epoch, self._permutation = -1, None

    def _order(self, epoch: int) -> np.ndarray:
        if epoch != self._permutation_epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_examples)
            self._permutation_epoch = epoch
        return self._permutation

    def local_batch(self, step: int) -> dict[str, np.ndarray]:
        epoch, index = divmod(step, self.batches_per_epoch)
        start = index * self.batch_size + self.local_start
        rows = self._order(epoch)[start:start + self.local_size]
        return {name: array[rows] for name, array in self.examples.items()}

    def state(self, step: int) -> dict:
        epoch, index = divmod(step, self.batches_per_epoch)
        return {"seed": self.seed, "epoch": int(epoch), "batch_in_epoch": int(index), "step": int(step)}


def save_examples(examples: dict[str, np.ndarray], path: str | Path) -> None:
    np.savez(path, **examples)


def load_examples(path: str | Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {name: data[name] for name in data.files}
