"""Model inputs for fine-tuning. Token tasks: tagged sentences -> fixed-length windows with first-subword
labels, and predictions back to words. Sentence tasks: [CLS] A [SEP] (B [SEP]) with segment ids.

Each word is tokenized on its own; its first subword carries the word's label, the others are ignored
(-1). A sentence longer than a window is cut, at word starts, into several windows: no word is dropped.
A word the tokenizer turns into nothing (e.g. only control characters) gets no prediction and is
counted; it is scored as "O".
"""
from __future__ import annotations

import dataclasses

import numpy as np

IGNORE = -1


@dataclasses.dataclass
class Windows:
    input_ids: np.ndarray  # N x L
    labels: np.ndarray  # N x L, IGNORE where no word starts
    sentence: np.ndarray  # N: which sentence each window belongs to
    word: np.ndarray  # N x L: index of the word whose first subword sits there, else -1
    unrepresented_words: int

    @property
    def segment_ids(self) -> np.ndarray:
        return np.zeros_like(self.input_ids)


def encode_sentences(sentences, tokenizer, label_ids: dict[str, int], seq_len: int) -> Windows:
    specials = tokenizer.specials
    words = [word for sentence in sentences for word in sentence.tokens]
    pieces = iter(tokenizer.encode_lines(words))
    rows, labels, owners, word_rows, unrepresented = [], [], [], [], 0
    room = seq_len - 2
    for index, sentence in enumerate(sentences):
        ids, tags, word_at = [], [], []
        for position, (tag, subwords) in enumerate(zip(sentence.tags, (next(pieces) for _ in sentence.tokens))):
            if not subwords:
                unrepresented += 1
                continue
            subwords = subwords[:room]  # a single word longer than a window keeps its first `room` pieces
            if len(ids) + len(subwords) > room:  # start a new window at this word
                _emit(rows, labels, word_rows, owners, ids, tags, word_at, index, specials, seq_len)
                ids, tags, word_at = [], [], []
            ids += subwords
            tags += [label_ids[tag]] + [IGNORE] * (len(subwords) - 1)
            word_at += [position] + [-1] * (len(subwords) - 1)
        if ids or not owners or owners[-1] != index:
            _emit(rows, labels, word_rows, owners, ids, tags, word_at, index, specials, seq_len)
    return Windows(np.asarray(rows, np.int32), np.asarray(labels, np.int32), np.asarray(owners, np.int32),
                   np.asarray(word_rows, np.int32), unrepresented)


def _emit(rows, labels, word_rows, owners, ids, tags, word_at, index, specials, seq_len):
    pad = seq_len - len(ids) - 2
    rows.append([specials.cls, *ids, specials.sep] + [specials.pad] * pad)
    labels.append([IGNORE, *tags, IGNORE] + [IGNORE] * pad)
    word_rows.append([-1, *word_at, -1] + [-1] * pad)
    owners.append(index)


def words_from_windows(windows: Windows, predictions_NxL: np.ndarray, sentences, labels: list[str]) -> list[list[str]]:
    """Per sentence, the predicted label of every word ("O" for words without a subword)."""
    predicted = [["O"] * len(sentence.tokens) for sentence in sentences]
    rows, positions = np.nonzero(windows.word >= 0)
    for row, position in zip(rows, positions):
        predicted[windows.sentence[row]][windows.word[row, position]] = labels[predictions_NxL[row, position]]
    return predicted


@dataclasses.dataclass
class Sequences:
    input_ids: np.ndarray  # N x L
    segment_ids: np.ndarray  # N x L: 0 for [CLS] A [SEP], 1 for B [SEP]
    labels: np.ndarray  # N
    truncated: int  # examples that lost tokens to the length limit


def encode_examples(examples, tokenizer, label_ids: dict[str, int] | None, seq_len: int) -> Sequences:
    """Sentences or pairs, cut to `seq_len` longest-first (as transformers' `truncation=True`); `label_ids` None:
    no labels (the caller fills them)."""
    specials = tokenizer.specials
    firsts = tokenizer.encode_lines([e.text for e in examples])
    seconds = tokenizer.encode_lines([e.pair for e in examples]) if examples[0].pair is not None else None
    ids = np.full((len(examples), seq_len), specials.pad, np.int32)
    segments = np.zeros((len(examples), seq_len), np.int32)
    truncated = 0
    for row, first in enumerate(firsts):
        second = seconds[row] if seconds is not None else None
        room = seq_len - (3 if second is not None else 2)
        keep_first, keep_second = len(first), len(second) if second is not None else 0
        while keep_first + keep_second > room:  # one token at a time from the longer side
            if keep_first > keep_second:
                keep_first -= 1
            else:
                keep_second -= 1
        truncated += keep_first < len(first) or (second is not None and keep_second < len(second))
        tokens = [specials.cls, *first[:keep_first], specials.sep]
        if second is not None:
            tokens += [*second[:keep_second], specials.sep]
            segments[row, keep_first + 2:len(tokens)] = 1
        ids[row, :len(tokens)] = tokens
    labels = np.asarray([label_ids[e.label] for e in examples] if label_ids is not None else [], np.int32)
    return Sequences(ids, segments, labels, truncated)
