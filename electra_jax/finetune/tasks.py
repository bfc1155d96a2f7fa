"""What differs between the fine-tuning tasks: how a split is read, encoded and scored.

ner / pos: tagged sentences (CoNLL columns or CoNLL-U), a label per word, entity F1 or token accuracy.
classify: single sentences or pairs (CSV/TSV/JSONL), one label per example, accuracy and macro F1.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

from electra_jax.finetune.data import (FinetuneDataError, check_labels, io_to_iob2, read_columns, read_conllu,
                                       read_sentences, repair_iob2)
from electra_jax.finetune.metrics import classification_scores, entity_scores, token_accuracy
from electra_jax.finetune.tokens import encode_examples, encode_sentences, words_from_windows


@dataclasses.dataclass(frozen=True)
class TokenTask:
    name: str  # "ner" or "pos"
    per_token = True

    @property
    def metric(self) -> str:
        return "f1" if self.name == "ner" else "accuracy"

    @property
    def title(self) -> str:
        return "NER F1" if self.name == "ner" else "POS accuracy"

    def read(self, path, options) -> tuple[list, str]:
        """Sentences of one split; for NER, IO tags read as IOB2 and stray I-X repaired to B-X (each counted
        in the note)."""
        path = Path(path)
        skipped = [] if options.skip_malformed else None
        sentences = (read_conllu(path) if path.suffix == ".conllu" else
                     read_columns(path, options.tag_column, skipped))
        notes = [f"{len(skipped)} malformed line(s) left out (line {', '.join(map(str, skipped[:3]))}"
                 f"{' ...' if len(skipped) > 3 else ''})"] if skipped else []
        if self.name != "ner":
            return sentences, ", ".join(notes)
        tags = {tag for sentence in sentences for tag in sentence.tags}
        if options.outside_tag == "O" and "0" in tags and "O" not in tags:
            raise FinetuneDataError(f"{path}: tag '0' occurs but 'O' never does; if '0' marks the words outside "
                                    f"entities (as in the Swedish Webbnyheter corpus), pass --outside-tag 0")
        other_scheme = sorted(tag for tag in tags if len(tag) > 2 and tag[1] == "-" and tag[0] in "SELU")
        if other_scheme:
            raise FinetuneDataError(f"{path}: tags such as {other_scheme[0]!r} look like BIOES/BILOU; give IOB2 "
                                    f"(B-X, I-X, O) or IO (X, O) tags")
        bare = repaired = 0
        for sentence in sentences:
            sentence.tags, count = io_to_iob2(sentence.tags, options.outside_tag)
            bare += count
            sentence.tags, count = repair_iob2(sentence.tags)
            repaired += count
        if bare:
            notes.append(f"{bare} IO tag(s) read as IOB2")
        return sentences, ", ".join([*notes, f"{repaired} stray I- tag(s) repaired"])

    @staticmethod
    def labels(items) -> list[str]:
        return sorted({tag for sentence in items for tag in sentence.tags})

    @staticmethod
    def check(items, labels, path) -> None:
        check_labels(items, set(labels), path)

    @staticmethod
    def encode(items, tokenizer, label_ids, seq_len: int):
        return encode_sentences(items, tokenizer, label_ids, seq_len)

    @staticmethod
    def describe(items, encoded) -> str:
        return f"{len(items):,} sentences in {len(encoded.input_ids):,} windows"

    def score(self, items, encoded, predictions, labels) -> dict:
        gold, predicted = [s.tags for s in items], words_from_windows(encoded, predictions, items, labels)
        if self.name == "pos":
            return {"accuracy": token_accuracy(gold, predicted)}
        scores = entity_scores(gold, predicted)
        return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"],
                "per_type": {kind: value["f1"] for kind, value in scores["per_type"].items()}}


@dataclasses.dataclass(frozen=True)
class SentenceTask:
    name: str = "classify"
    per_token = False
    metric = "accuracy"
    title = "accuracy"

    @staticmethod
    def read(path, options) -> tuple[list, str]:
        return read_sentences(path, options.text_field, options.pair_field, options.label_field), ""

    @staticmethod
    def labels(items) -> list[str]:
        return sorted({example.label for example in items})

    @staticmethod
    def check(items, labels, path) -> None:
        check_labels(items, set(labels), path)

    @staticmethod
    def encode(items, tokenizer, label_ids, seq_len: int):
        return encode_examples(items, tokenizer, label_ids, seq_len)

    @staticmethod
    def describe(items, encoded) -> str:
        kind = "pairs" if items[0].pair is not None else "sentences"
        return f"{len(items):,} {kind} ({encoded.truncated:,} cut to the sequence length)"

    @staticmethod
    def score(items, encoded, predictions, labels) -> dict:
        return classification_scores([e.label for e in items], [labels[p] for p in predictions])


TASKS = {"ner": TokenTask("ner"), "pos": TokenTask("pos"), "classify": SentenceTask()}
