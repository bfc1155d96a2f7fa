"""What differs between the fine-tuning tasks: how a split is read, encoded, learnt and scored.

ner / pos: tagged sentences (CoNLL columns or CoNLL-U), a label per word, entity F1 or token accuracy.
classify: single sentences or pairs (CSV/TSV/JSONL), one label per example, accuracy and macro F1.
regression: sentence pairs with a number (STS-B, KorSTS), mean squared error, Pearson and Spearman.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import optax

from electra_jax.finetune.data import FinetuneDataError, check_labels, read_columns, read_conllu, read_sentences
from electra_jax.finetune.schemes import drop_types, from_iob2, tag_problem, to_iob2
from electra_jax.finetune.metrics import classification_scores, entity_scores, token_accuracy
from electra_jax.finetune.tokens import IGNORE, encode_examples, encode_sentences, words_from_windows


class _Classes:
    """Softmax over labels: cross-entropy on every labelled position, the most likely label as the answer.
    `score(..., tuned)`: the dev scores of the same model, for what a task tunes on dev (QA's null threshold).
    `read_unlabelled` and `write_predictions` are `electra-jax predict`'s (and the predictions files'): text
    without labels in, the model's answers out in the input's own layout."""
    problem_type = "single_label_classification"
    named_labels = True  # the outputs are labels read from the training data

    @staticmethod
    def loss(logits, labels):
        """Mean cross-entropy over the labelled positions (per token: first subwords; per sequence: all)."""
        real = labels != IGNORE
        losses = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.maximum(labels, 0))
        return (losses * real).sum() / jnp.maximum(real.sum(), 1)

    @staticmethod
    def decode(logits):
        return logits.argmax(-1)


@dataclasses.dataclass(frozen=True)
class TokenTask(_Classes):
    name: str  # "ner" or "pos"
    per_token = True
    head = "token"

    @property
    def metric(self) -> str:
        return "f1" if self.name == "ner" else "accuracy"

    @property
    def title(self) -> str:
        return "NER F1" if self.name == "ner" else "POS accuracy"

    def read(self, path, options, training: bool = False) -> tuple[list, str]:
        """Sentences of one split. NER tags are read in `options.tag_scheme` as IOB2 (IO tags and stray I-X
        repaired, each counted in the note), and the types in `options.drop_tags` become O (each must occur in
        the training split)."""
        path = Path(path)
        skipped, spaces = ([] if options.skip_malformed else None), []
        ner = self.name == "ner"
        check = (lambda tag: tag_problem(tag, options.tag_scheme, options.outside_tag)) if ner else None
        sentences = (read_conllu(path) if path.suffix == ".conllu" else
                     read_columns(path, options.tag_column, skipped, options.token_column, check, spaces))
        notes = [f"{len(found)} {what} left out (line {', '.join(map(str, found[:3]))}"
                 f"{' ...' if len(found) > 3 else ''})"
                 for what, found in (("malformed line(s)", skipped), ("whitespace token(s)", spaces)) if found]
        if not ner:
            return sentences, ", ".join(notes)
        tags = {tag for sentence in sentences for tag in sentence.tags}
        if options.outside_tag == "O" and "0" in tags and "O" not in tags:
            raise FinetuneDataError(f"{path}: tag '0' occurs but 'O' never does; if '0' marks the words outside "
                                    f"entities (as in the Swedish Webbnyheter corpus), pass --outside-tag 0")
        counts = {"bare": 0, "stray": 0, "dropped": 0}
        dropped = frozenset(options.drop_tags)
        types = {tag[2:] for sentence in sentences for tag in to_iob2(sentence.tags, options.tag_scheme,
                                                                      options.outside_tag)[0] if tag != "O"}
        if training and dropped - types:
            raise FinetuneDataError(f"{path}: --drop-tags {','.join(sorted(dropped - types))}: no such entity type "
                                    f"in the training data (types: {', '.join(sorted(types))})")
        for sentence in sentences:
            sentence.tags, changed = to_iob2(sentence.tags, options.tag_scheme, options.outside_tag)
            sentence.tags, changed["dropped"] = drop_types(sentence.tags, dropped)
            for key, value in changed.items():
                counts[key] += value
        if counts["bare"]:
            notes.append(f"{counts['bare']} IO tag(s) read as IOB2")
        if options.tag_scheme != "iob2":
            notes.append(f"{options.tag_scheme} tags read as IOB2")
        if dropped:
            notes.append(f"{counts['dropped']} {'/'.join(sorted(dropped))} tag(s) read as O (--drop-tags)")
        return sentences, ", ".join([*notes, f"{counts['stray']} stray I- tag(s) repaired"])

    @staticmethod
    def labels(items) -> list[str]:
        return sorted({tag for sentence in items for tag in sentence.tags})

    @staticmethod
    def check(items, labels, path) -> None:
        check_labels(items, set(labels), path)

    @staticmethod
    def encode(items, tokenizer, label_ids, options):
        return encode_sentences(items, tokenizer, label_ids, options.seq_len)

    @staticmethod
    def describe(items, encoded) -> str:
        return f"{len(items):,} sentences in {len(encoded.input_ids):,} windows"

    prediction_suffix = ".tsv"

    @staticmethod
    def read_unlabelled(path, options, labels) -> list:
        """Tokens in `options.token_column` (other columns ignored) or CoNLL-U FORMs."""
        path = Path(path)
        sentences = read_conllu(path) if path.suffix == ".conllu" else read_columns(path, None, None,
                                                                                    options.token_column, spaces=[])
        for sentence in sentences:
            sentence.tags = [labels[0]] * len(sentence.tokens)
        return sentences

    def write_predictions(self, items, encoded, predictions, labels, options, tuned=None) -> str:
        """Token TAB predicted tag, a blank line after each sentence; NER tags in `options.tag_scheme`."""
        blocks = []
        for sentence, tags in zip(items, words_from_windows(encoded, predictions, items, labels)):
            if self.name == "ner":  # a stray I-X read as B-X, as the scores read it, then the file's scheme
                tags = from_iob2(to_iob2(tags, "iob2")[0], options.tag_scheme, options.outside_tag)
            blocks.append("".join(f"{token}\t{tag}\n" for token, tag in zip(sentence.tokens, tags)))
        return "\n".join(blocks)

    def score(self, items, encoded, predictions, labels, tuned=None) -> dict:
        gold, predicted = [s.tags for s in items], words_from_windows(encoded, predictions, items, labels)
        if self.name == "pos":
            return {"accuracy": token_accuracy(gold, predicted)}
        scores = entity_scores(gold, predicted)
        return {"f1": scores["f1"], "precision": scores["precision"], "recall": scores["recall"],
                "per_type": {kind: value["f1"] for kind, value in scores["per_type"].items()}}


@dataclasses.dataclass(frozen=True)
class SentenceTask(_Classes):
    name: str = "classify"
    per_token = False
    head = "sequence"
    metric = "accuracy"
    title = "accuracy"

    @staticmethod
    def read(path, options, training: bool = False) -> tuple[list, str]:
        return read_sentences(path, options.text_field, options.pair_field, options.label_field), ""

    @staticmethod
    def labels(items) -> list[str]:
        return sorted({example.label for example in items})

    @staticmethod
    def check(items, labels, path) -> None:
        check_labels(items, set(labels), path)

    @staticmethod
    def encode(items, tokenizer, label_ids, options):
        return encode_examples(items, tokenizer, label_ids, options.seq_len)

    @staticmethod
    def describe(items, encoded) -> str:
        kind = "pairs" if items[0].pair is not None else "sentences"
        return f"{len(items):,} {kind} ({encoded.truncated:,} cut to the sequence length)"

    @staticmethod
    def score(items, encoded, predictions, labels, tuned=None) -> dict:
        return classification_scores([e.label for e in items], [labels[p] for p in predictions])

    prediction_suffix = ".jsonl"
    answer_field = "label"

    @staticmethod
    def read_unlabelled(path, options, labels) -> list:
        examples = read_sentences(path, options.text_field, options.pair_field, None)
        for example in examples:
            example.label = labels[0]
        return examples

    @staticmethod
    def answer(prediction, labels):
        return labels[int(prediction)]

    def write_predictions(self, items, encoded, predictions, labels, options, tuned=None) -> str:
        """One JSON object per example: the text (and pair) and the answer."""
        rows = [{options.text_field: e.text, **({options.pair_field: e.pair} if e.pair is not None else {}),
                 self.answer_field: self.answer(p, labels)} for e, p in zip(items, predictions)]
        return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


@dataclasses.dataclass(frozen=True)
class RegressionTask(SentenceTask):
    """One number per example from a one-output head (HF's `num_labels=1`, `problem_type="regression"`)."""
    name: str = "regression"
    metric = "spearman"
    title = "Spearman"
    problem_type = "regression"
    named_labels = False

    @staticmethod
    def read(path, options, training: bool = False) -> tuple[list, str]:
        examples = read_sentences(path, options.text_field, options.pair_field, options.label_field)
        for example in examples:
            try:
                example.label = float(example.label)
            except ValueError:
                raise FinetuneDataError(f"{path}:{example.line}: {options.label_field} {example.label!r} is not a "
                                        f"number (--task regression learns a score; for classes use --task "
                                        f"classify)") from None
            if not np.isfinite(example.label):
                raise FinetuneDataError(f"{path}:{example.line}: {options.label_field} is {example.label}")
        return examples, ""

    answer_field = "score"

    @staticmethod
    def read_unlabelled(path, options, labels) -> list:
        examples = read_sentences(path, options.text_field, options.pair_field, None)
        for example in examples:
            example.label = 0.0
        return examples

    @staticmethod
    def answer(prediction, labels):
        return round(float(prediction), 6)

    @staticmethod
    def labels(items) -> list[str]:
        return ["LABEL_0"]  # one output, named as transformers names it

    @staticmethod
    def check(items, labels, path) -> None:
        pass

    @staticmethod
    def encode(items, tokenizer, label_ids, options):
        encoded = encode_examples(items, tokenizer, None, options.seq_len)
        encoded.labels = np.asarray([e.label for e in items], np.float32)
        return encoded

    @staticmethod
    def loss(scores_Bx1, labels_B):
        return jnp.mean((scores_Bx1[:, 0] - labels_B) ** 2)

    @staticmethod
    def decode(scores_Bx1):
        return scores_Bx1[:, 0]

    @staticmethod
    def score(items, encoded, predictions, labels, tuned=None) -> dict:
        from scipy import stats
        gold = np.asarray([e.label for e in items], np.float64)
        predicted = np.asarray(predictions, np.float64)
        if np.ptp(predicted) == 0 or np.ptp(gold) == 0:  # no correlation of a constant (scipy warns, answers nan)
            return {"spearman": 0.0, "pearson": 0.0, "mse": float(np.mean((gold - predicted) ** 2))}
        return {"spearman": float(stats.spearmanr(gold, predicted).statistic),
                "pearson": float(stats.pearsonr(gold, predicted).statistic),
                "mse": float(np.mean((gold - predicted) ** 2))}


@dataclasses.dataclass(frozen=True)
class QATask:
    """SQuAD v1.1/v2.0 extractive QA (qa.py): a start and an end logit per token (HF's `…ForQuestionAnswering`
    `qa_outputs`), model selection on F1."""
    name: str = "qa"
    per_token = True
    head = "qa"
    metric = "f1"
    title = "F1"
    problem_type = None
    named_labels = False

    @staticmethod
    def read(path, options, training: bool = False) -> tuple[list, str]:
        from electra_jax.finetune.qa import read_squad
        questions, misplaced = read_squad(path)
        impossible = sum(not q.answerable for q in questions)
        notes = [f"{impossible} without an answer (SQuAD v2)" if impossible else "all answerable (SQuAD v1.1)"]
        if misplaced:
            notes.append(f"{misplaced} answer(s) not at their answer_start" + (", left out" if training else ""))
            if training:
                questions = [q for q in questions if q.start >= 0 or not q.answerable]
        return questions, ", ".join(notes)

    @staticmethod
    def labels(items) -> list[str]:
        return ["LABEL_0", "LABEL_1"]  # the start and end logits, named as transformers names them

    @staticmethod
    def check(items, labels, path) -> None:
        pass

    @staticmethod
    def encode(items, tokenizer, label_ids, options):
        from electra_jax.finetune.qa import encode_questions
        return encode_questions(items, tokenizer, options.seq_len, options.doc_stride, options.max_query_length,
                                options.max_answer_length)

    @staticmethod
    def describe(items, encoded) -> str:
        return f"{len(items):,} questions in {len(encoded.input_ids):,} windows"

    @staticmethod
    def loss(logits_BxLx2, labels_Bx2):
        """The mean of the start and end cross-entropies over the window's positions."""
        losses = optax.softmax_cross_entropy_with_integer_labels(jnp.swapaxes(logits_BxLx2, 1, 2), labels_Bx2)
        return losses.mean()

    @staticmethod
    def decode(logits_BxLx2):
        return logits_BxLx2

    @staticmethod
    def score(items, encoded, predictions, labels, tuned=None) -> dict:
        from electra_jax.finetune.qa import best_spans, squad_scores
        spans = best_spans(items, encoded, predictions)
        # The dev split decides: a v2 model (dev had unanswerable questions) brings its threshold to test.
        with_null = "threshold" in tuned if tuned else any(not q.answerable for q in items)
        return squad_scores(items, spans, tuned.get("threshold") if tuned else None, with_null)

    prediction_suffix = ".json"

    @staticmethod
    def read_unlabelled(path, options, labels) -> list:
        from electra_jax.finetune.qa import read_squad
        return read_squad(path, answers=False)[0]

    @staticmethod
    def write_predictions(items, encoded, predictions, labels, options, tuned=None) -> str:
        """{question id: answer text, "" for no answer (with the dev-tuned null threshold)}: what the official
        evaluation scripts read."""
        from electra_jax.finetune.qa import best_spans
        threshold = (tuned or {}).get("threshold", -np.inf)
        answers = {q.id: "" if margin < threshold else text
                   for q, (text, margin) in zip(items, best_spans(items, encoded, predictions))}
        return json.dumps(answers, indent=1, ensure_ascii=False) + "\n"


TASKS = {"ner": TokenTask("ner"), "pos": TokenTask("pos"), "classify": SentenceTask(), "regression": RegressionTask(),
         "qa": QATask()}
