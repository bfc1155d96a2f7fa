"""Extractive question answering on SQuAD v1.1 / v2.0 JSON (KorQuAD has the same layout).

Reading: every question with its paragraph's context; v2's `is_impossible` questions have no answer.
Encoding: [CLS] question [SEP] context window [SEP]. A context longer than a window is cut into windows that
overlap by `doc_stride` tokens (transformers' `stride`, as its QA examples use it). The context is split on
whitespace and each word tokenized alone, the way NER words are; every context token keeps the characters it
came from, so an answer is a substring of the context even when it ends inside a word (Korean particles).
A window is labelled with the answer's first and last token, or with [CLS] (position 0) when the answer is
not wholly inside it.
Answering: over a question's windows, the context span (at most `max_answer_length` tokens) with the largest
start + end logit among the `n_best` best starts and ends; v2 answers "" when the [CLS] score beats it by more
than a threshold, the one that maximises F1 on dev (as the official v2 script's best_f1_thresh).
Scoring: exact match and F1 exactly as the official SQuAD v2.0 evaluation script computes them (on answerable
questions the v1.1 script agrees).
"""
from __future__ import annotations

import collections
import dataclasses
import json
import re
import string
from pathlib import Path

import numpy as np

from electra_jax.finetune.data import FinetuneDataError


@dataclasses.dataclass
class Question:
    id: str
    question: str
    context: str
    answers: list[str]  # every gold answer text (dev/test score against the best of them); [] for impossible
    start: int  # character offset of the first answer in the context; -1 when there is none
    where: str  # data[i].paragraphs[j].qas[k], for messages

    @property
    def answerable(self) -> bool:
        return bool(self.answers)


def read_squad(path: str | Path, answers: bool = True) -> tuple[list[Question], int]:
    """The questions of a SQuAD-format file, and how many answers were not at their `answer_start` (those
    questions keep their answer texts for scoring but have no position to learn from). `answers` False:
    questions to answer, their answers (if any) not read."""
    path = Path(path)
    if not path.is_file():
        raise FinetuneDataError(f"{path}: file not found")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise FinetuneDataError(f"{path}: not SQuAD JSON ({err})") from None
    if not isinstance(document, dict) or not isinstance(document.get("data"), list):
        raise FinetuneDataError(f"{path}: not SQuAD JSON: no top-level \"data\" list of articles")
    questions, misplaced = [], 0
    for i, article in enumerate(document["data"]):
        for j, paragraph in enumerate(article.get("paragraphs", [])):
            context = paragraph.get("context")
            if not isinstance(context, str):
                raise FinetuneDataError(f"{path}: data[{i}].paragraphs[{j}] has no \"context\" text")
            for k, qa in enumerate(paragraph.get("qas", [])):
                where = f"data[{i}].paragraphs[{j}].qas[{k}]"
                if not isinstance(qa.get("question"), str) or "id" not in qa:
                    raise FinetuneDataError(f"{path}: {where} needs a \"question\" and an \"id\"")
                impossible = bool(qa.get("is_impossible", False)) or not answers
                given = [] if impossible else qa.get("answers") or []
                if not impossible and not given:
                    raise FinetuneDataError(f"{path}: {where} (id {qa['id']}) has no answers and is not "
                                            f"\"is_impossible\"")
                try:
                    texts, start = [a["text"] for a in given], int(given[0]["answer_start"]) if given else -1
                except (KeyError, TypeError, ValueError):
                    raise FinetuneDataError(f"{path}: {where} (id {qa['id']}): every answer needs \"text\" and "
                                            f"\"answer_start\"") from None
                if given and context[start:start + len(texts[0])] != texts[0]:
                    start, misplaced = -1, misplaced + 1
                questions.append(Question(str(qa["id"]), qa["question"], context, texts, start, where))
    if not questions:
        raise FinetuneDataError(f"{path}: no questions in the file")
    return questions, misplaced


@dataclasses.dataclass
class QAWindows:
    input_ids: np.ndarray  # N x L
    segment_ids: np.ndarray  # N x L: 0 for [CLS] question [SEP], 1 for the context and its [SEP]
    labels: np.ndarray  # N x 2: the answer's first and last token in the window, 0 0 ([CLS]) if not inside
    question: np.ndarray  # N: which question each window belongs to
    offsets: np.ndarray  # N x L x 2: characters of the context each token came from; -1 -1 off the context
    max_answer_length: int  # tokens: longer spans are never answers

    @property
    def truncated(self) -> int:
        return 0


def context_room(seq_len: int, max_query_length: int) -> int:
    """Context tokens a window holds when the question is as long as allowed."""
    return seq_len - max_query_length - 3


def qa_stride(seq_len: int, max_query_length: int) -> int:
    """The default overlap: transformers' 128 where a window has room for it twice (--seq-len 384), else half."""
    return min(128, context_room(seq_len, max_query_length) // 2)


def encode_questions(questions: list[Question], tokenizer, seq_len: int, doc_stride: int, max_query_length: int,
                     max_answer_length: int) -> QAWindows:
    specials = tokenizer.specials
    contexts = {}  # context text -> (ids, char offsets): a paragraph's questions share it
    for q in questions:
        if q.context not in contexts:
            words = [(m.start(), m.group()) for m in re.finditer(r"\S+", q.context)]
            ids, offsets = [], []
            for (first, _), pieces in zip(words, tokenizer.encode_with_offsets([w for _, w in words])):
                for piece, start, end in pieces:
                    ids.append(piece)
                    offsets.append((first + start, first + end))
            contexts[q.context] = (ids, offsets)
    query_ids = [ids[:max_query_length] for ids in tokenizer.encode_lines([q.question for q in questions])]
    rows, segments, labels, owners, spans = [], [], [], [], []
    for index, (q, query) in enumerate(zip(questions, query_ids)):
        ids, offsets = contexts[q.context]
        room = seq_len - len(query) - 3
        first = last = None
        if q.start >= 0:
            end = q.start + len(q.answers[0])
            inside = [t for t, (a, b) in enumerate(offsets) if b > q.start and a < end]
            first, last = (inside[0], inside[-1]) if inside else (None, None)
        window = 0
        while True:
            chunk = range(window, min(window + room, len(ids)))
            head = [specials.cls, *query, specials.sep]
            tokens = head + [ids[t] for t in chunk] + [specials.sep]
            row = np.full(seq_len, specials.pad, np.int32)
            row[:len(tokens)] = tokens
            segment = np.zeros(seq_len, np.int32)
            segment[len(head):len(tokens)] = 1
            span = np.full((seq_len, 2), -1, np.int32)
            span[len(head):len(head) + len(chunk)] = [offsets[t] for t in chunk]
            label = (0, 0)
            if first is not None and chunk and first >= chunk.start and last < chunk.stop:
                label = (len(head) + first - chunk.start, len(head) + last - chunk.start)
            rows.append(row)
            segments.append(segment)
            labels.append(label)
            owners.append(index)
            spans.append(span)
            if chunk.stop >= len(ids):
                break
            window += room - doc_stride
    return QAWindows(np.stack(rows), np.stack(segments), np.asarray(labels, np.int32), np.asarray(owners, np.int32),
                     np.stack(spans), max_answer_length)


def best_spans(questions: list[Question], windows: QAWindows, logits_NxLx2: np.ndarray,
               n_best: int = 20) -> list[tuple[str, float]]:
    """Per question: (the best non-empty answer, or "" when no window has a valid span; its score minus the
    null score: how much more the model believes the answer than "no answer")."""
    best = [("", -np.inf) for _ in questions]
    null = [np.inf] * len(questions)
    for row in range(len(windows.input_ids)):
        index = windows.question[row]
        start_L, end_L = logits_NxLx2[row, :, 0], logits_NxLx2[row, :, 1]
        null[index] = min(null[index], float(start_L[0] + end_L[0]))
        context = windows.offsets[row, :, 0] >= 0
        starts = [i for i in np.argsort(-start_L) if context[i]][:n_best]
        ends = [i for i in np.argsort(-end_L) if context[i]][:n_best]
        for s in starts:
            for e in ends:
                if e < s or e - s + 1 > windows.max_answer_length:
                    continue
                score = float(start_L[s] + end_L[e])
                if score > best[index][1]:
                    text = questions[index].context[windows.offsets[row, s, 0]:windows.offsets[row, e, 1]]
                    if text.strip():  # a lone "▁" piece spans no characters
                        best[index] = (text, score)
    return [(text, score - null_score) for (text, score), null_score in zip(best, null)]


# The official SQuAD v2.0 evaluation script's answer normalisation and scores.
def normalize_answer(text: str) -> str:
    """Lower case, punctuation and English articles removed, whitespace collapsed."""
    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    return " ".join(re.sub(r"\b(a|an|the)\b", " ", text, flags=re.UNICODE).split())


def exact_score(gold: str, predicted: str) -> int:
    return int(normalize_answer(gold) == normalize_answer(predicted))


def f1_score(gold: str, predicted: str) -> float:
    gold_tokens, predicted_tokens = normalize_answer(gold).split(), normalize_answer(predicted).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)  # "no answer" scores 1 only against "no answer"
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def question_scores(question: Question, predicted: str) -> tuple[int, float]:
    """(exact, F1) against the best gold answer; answers that normalise to nothing count as "no answer"."""
    golds = [a for a in question.answers if normalize_answer(a)] or [""]
    return max(exact_score(g, predicted) for g in golds), max(f1_score(g, predicted) for g in golds)


def squad_scores(questions: list[Question], spans: list[tuple[str, float]], threshold: float | None,
                 with_null: bool) -> dict:
    """EM and F1 (0-1) of the answers; with_null (v2): "" wherever the span's margin over the null score is
    below `threshold`, and threshold None picks the one with the best F1 here (reported as "threshold")."""
    if with_null and threshold is None:
        threshold = best_threshold(questions, spans)
    answers = ["" if with_null and margin < threshold else text for text, margin in spans]
    scores = [question_scores(q, a) for q, a in zip(questions, answers)]
    result = {"exact": float(np.mean([s[0] for s in scores])), "f1": float(np.mean([s[1] for s in scores]))}
    if with_null:
        result["threshold"] = float(threshold)
        for name, keep in (("has_answer", True), ("no_answer", False)):
            chosen = [s for q, s in zip(questions, scores) if q.answerable == keep]
            if chosen:
                result[f"{name}_f1"] = float(np.mean([s[1] for s in chosen]))
    return result


def best_threshold(questions: list[Question], spans: list[tuple[str, float]]) -> float:
    """The margin threshold with the best total F1, as the official v2 script's find_best_thresh counts it
    (our margin is its negated no-answer probability): from "no answer" everywhere (the unanswerable questions
    right), questions are answered in order of falling margin; an answerable one then adds its F1, an
    unanswerable one given a non-empty answer costs 1. Answering nothing is a threshold above every margin."""
    order = np.argsort([-margin for _, margin in spans], kind="stable")
    total = best_total = sum(not q.answerable for q in questions)
    best = max([margin for _, margin in spans if np.isfinite(margin)], default=0.0) + 1.0
    for i in order:
        text, margin = spans[i]
        if not np.isfinite(margin):
            break  # no valid span: never answered
        total += question_scores(questions[i], text)[1] if questions[i].answerable else -float(bool(text))
        if total > best_total:
            best_total, best = total, margin
    return float(best)
