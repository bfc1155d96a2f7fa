"""Packing semantics on synthetic token ids: each document's ids are its own range, increasing along the
document, so every record shows which document and which order its tokens came from."""
import random

import numpy as np
import pytest

from electra_jax.data.packing import AlbertPacker, ElectraPacker, decode_record, record_dtype

CLS, SEP, PAD = 2, 3, 0
SEQ_LEN = 64
DTYPE = record_dtype(1_000_000)  # ids beyond uint16


def _documents(count: int, seed: int = 0):
    """Documents of 5-60 lines of 1-40 tokens; document d uses ids 10000*(d+1) + position."""
    rng = random.Random(seed)
    documents = []
    for d in range(count):
        lines, position = [], 0
        for _ in range(rng.randint(5, 60)):
            length = rng.randint(1, 40)
            lines.append(list(range(10_000 * (d + 1) + position, 10_000 * (d + 1) + position + length)))
            position += length
        documents.append(lines)
    return documents


def _pack(packer_class, documents, **options):
    packer = packer_class(SEQ_LEN, CLS, SEP, DTYPE, random.Random(1), **options)
    for lines in documents:
        packer.add_document(lines)
    return packer, [decode_record(r, DTYPE, SEQ_LEN, PAD) for r in packer.records]


def _segments(example):
    ids, segments = example["input_ids"], example["segment_ids"]
    length = int((ids != PAD).sum())
    assert ids[0] == CLS and ids[length - 1] == SEP and (ids[length:] == PAD).all()
    first_end = int(np.argmax(segments[:length])) if segments[:length].any() else length
    assert ids[first_end - 1] == SEP and (segments[:first_end] == 0).all() and (segments[first_end:length] == 1).all()
    first, second = ids[1:first_end - 1], ids[first_end:length - 1]
    assert SEP not in first and SEP not in second and CLS not in first and CLS not in second
    return first, second


def test_electra_packing_semantics():
    documents = _documents(600)
    packer, examples = _pack(ElectraPacker, documents, short_seq_prob=0.05, single_segment_prob=0.1)
    stats = packer.stats
    assert stats["examples"] == len(examples) > 1000
    packed = 0
    for example in examples:
        first, second = _segments(example)
        tokens = np.concatenate([first, second])
        assert len(tokens) + 2 + (len(second) > 0) <= SEQ_LEN
        assert len(set(tokens // 10_000)) == 1, "an example spans two documents"
        assert (np.diff(tokens) > 0).all(), "segments keep the document's order"
        packed += len(tokens)
    # Nothing disappears: what does not fit an example starts the next one of the same document.
    assert stats["trimmed_tokens"] == 0
    assert packed == sum(len(line) for lines in documents for line in lines)
    # ~5% random shorter targets (one draw per example), ~10% single-segment by choice (plus document ends).
    assert 0.035 < stats["short_target"] / stats["examples"] < 0.065
    single = stats["single_segment"] / stats["examples"]
    assert 0.1 < single < 0.3
    lengths = (np.stack([e["input_ids"] for e in examples]) != PAD).sum(1)
    assert (lengths == SEQ_LEN).mean() > 0.5  # most examples are full


def test_electra_long_line_is_split_not_lost():
    packer, examples = _pack(ElectraPacker, [[list(range(1000, 1000 + 5 * SEQ_LEN))]], short_seq_prob=0.0,
                             single_segment_prob=0.0)
    tokens = np.concatenate([np.concatenate(_segments(e)) for e in examples])
    assert packer.stats["trimmed_tokens"] == 0
    assert (tokens == np.arange(1000, 1000 + 5 * SEQ_LEN)).all()


def test_albert_pairs_for_sentence_order_prediction():
    documents = _documents(600, seed=2)
    packer, examples = _pack(AlbertPacker, documents, short_seq_prob=0.1)
    labels = np.array([int(e["sop_label"]) for e in examples])
    assert 0.45 < labels.mean() < 0.55 and packer.stats["swapped"] == labels.sum()
    packed = 0
    for example, label in zip(examples, labels):
        first, second = _segments(example)
        assert len(first) and len(second), "every ALBERT example is a pair"
        assert len(first) + len(second) + 3 <= SEQ_LEN
        assert len(set(np.concatenate([first, second]) // 10_000)) == 1, "a pair spans two documents"
        a, b = (first, second) if label == 0 else (second, first)
        assert a.max() < b.min(), "label 0: B follows A in the document; label 1: swapped"
        packed += len(first) + len(second)
    # ALBERT truncates pairs as the original does; every dropped token is counted.
    assert packed + packer.stats["trimmed_tokens"] == sum(len(line) for lines in documents for line in lines)
    assert 0.07 < packer.stats["short_target"] / (len(examples) + len(documents)) < 0.13


@pytest.mark.parametrize("packer_class", [ElectraPacker, AlbertPacker])
def test_empty_documents_are_counted(packer_class):
    packer, examples = _pack(packer_class, [[], [[]], [[1000, 1001, 1002]]], short_seq_prob=0.0)
    assert packer.stats["documents"] == 3 and packer.stats["empty_documents"] == 2 and len(examples) == 1
