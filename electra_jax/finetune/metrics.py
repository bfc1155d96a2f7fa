"""Evaluation metrics: entity-level F1 as seqeval computes it in strict IOB2 mode, token accuracy, and
accuracy / macro F1 for classification.

Strict IOB2 (seqeval `mode="strict", scheme=IOB2`): an entity is B-X followed by any number of I-X; an
I-X that does not continue an entity of type X starts nothing and ends whatever was open.
"""
from __future__ import annotations

import collections


def entities(tags: list[str]) -> set[tuple[str, int, int]]:
    """(type, first, last + 1) of every strict-IOB2 entity."""
    found, open_type, start = set(), None, 0
    for position, tag in enumerate([*tags, "O"]):
        if open_type is not None and tag != f"I-{open_type}":
            found.add((open_type, start, position))
            open_type = None
        if tag.startswith("B-"):
            open_type, start = tag[2:], position
    return found


def _f1(true_positives: int, predicted: int, gold: int) -> dict[str, float]:
    precision = true_positives / predicted if predicted else 0.0
    recall = true_positives / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "support": gold}


def entity_scores(gold: list[list[str]], predicted: list[list[str]]) -> dict:
    """Micro precision/recall/F1 over all entities, and the same per entity type."""
    counts = collections.defaultdict(lambda: [0, 0, 0])  # type -> true positives, predicted, gold
    for gold_tags, predicted_tags in zip(gold, predicted, strict=True):
        gold_set, predicted_set = entities(gold_tags), entities(predicted_tags)
        for kind, *_ in gold_set:
            counts[kind][2] += 1
        for kind, *_ in predicted_set:
            counts[kind][1] += 1
        for kind, *_ in gold_set & predicted_set:
            counts[kind][0] += 1
    total = [sum(c[i] for c in counts.values()) for i in range(3)]
    return {**_f1(*total), "per_type": {kind: _f1(*c) for kind, c in sorted(counts.items())}}


def token_accuracy(gold: list[list[str]], predicted: list[list[str]]) -> float:
    pairs = [(g, p) for gs, ps in zip(gold, predicted, strict=True) for g, p in zip(gs, ps, strict=True)]
    return sum(g == p for g, p in pairs) / len(pairs) if pairs else 0.0


def classification_scores(gold: list[str], predicted: list[str]) -> dict[str, float]:
    """Accuracy and the macro F1 over the labels of the gold data."""
    accuracy = sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold) if gold else 0.0
    per_label = [_f1(sum(g == p == label for g, p in zip(gold, predicted)), predicted.count(label),
                     gold.count(label))["f1"] for label in sorted(set(gold))]
    return {"accuracy": accuracy, "macro_f1": sum(per_label) / len(per_label) if per_label else 0.0}
