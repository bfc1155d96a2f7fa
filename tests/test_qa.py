"""Extractive QA parts: the official SQuAD scores on hand-worked cases, windows that split an answer, the best
span and the no-answer threshold, the SQuAD reader's errors, and tokens' character offsets."""
import json

import numpy as np
import pytest

from electra_jax.data.spm import save_sentencepiece, train_sentencepiece
from electra_jax.data.text_tokenizer import SpecialIds, load_text_tokenizer
from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
from electra_jax.finetune.data import FinetuneDataError
from electra_jax.finetune.qa import (Question, best_spans, best_threshold, encode_questions, exact_score, f1_score,
                                     normalize_answer, question_scores, read_squad, squad_scores)


def test_scores_as_the_official_squad_script():
    assert normalize_answer("The  Cat's hat!") == "cats hat"
    assert normalize_answer("an apple, a pear and THE end.") == "apple pear and end"
    assert exact_score("Denver Broncos", "the denver broncos.") == 1 and exact_score("Denver", "Denver Broncos") == 0
    # Gold [cat, sat], predicted [cat, sat, down]: precision 2/3, recall 1, F1 0.8.
    assert f1_score("the cat sat", "a cat sat down") == pytest.approx(0.8)
    # Repeated tokens count as often as both sides have them: gold [a1 a1 b], predicted [a1 b b]: 2 shared.
    assert f1_score("x x y", "x y y") == pytest.approx(2 / 3)
    assert f1_score("cat", "dog") == 0.0
    assert f1_score("", "") == 1.0 and f1_score("", "cat") == 0.0 and f1_score("cat", "") == 0.0
    assert f1_score("the", "a") == 1.0  # both normalise to nothing: "no answer" against "no answer"
    question = Question("1", "?", "", ["Denver Broncos", "Broncos", "the Denver Broncos"], 0, "")
    assert question_scores(question, "Broncos") == (1, 1.0)
    assert question_scores(question, "Denver") == (0, pytest.approx(2 / 3))  # best of the gold answers
    impossible = Question("2", "?", "", [], -1, "")
    assert question_scores(impossible, "") == (1, 1.0) and question_scores(impossible, "Broncos") == (0, 0.0)


class _ThreeLetters:
    """A stand-in tokenizer: every 3 characters of a word are one token (id 10 + position in the word)."""
    specials = SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)

    def encode_with_offsets(self, words):
        return [[(10 + i // 3, i, min(i + 3, len(w))) for i in range(0, len(w), 3)] for w in words]

    def encode_lines(self, lines):
        return [[piece for word in line.split() for piece, _, _ in self.encode_with_offsets([word])[0]]
                for line in lines]


def test_windows_overlap_by_the_stride_and_label_only_whole_answers():
    context = " ".join(f"w{i:02d}" for i in range(30)) + " Kongens Nytorv ligger her"
    answer = "Kongens Nytorv"  # five tokens: Kon gen s Nyt orv
    question = Question("q", "hvor", context, [answer], context.index(answer), "")
    windows = encode_questions([question], _ThreeLetters(), seq_len=16, doc_stride=4, max_query_length=8,
                               max_answer_length=30)
    room = 16 - 2 - 3  # the question "hvor" is 2 tokens
    assert windows.input_ids.shape[1] == 16 and len(windows.input_ids) > 3
    context_spans = [[tuple(o) for o in row if o[0] >= 0] for row in windows.offsets]
    assert all(len(spans) <= room for spans in context_spans)
    for previous, following in zip(context_spans, context_spans[1:]):
        assert previous[-4:] == following[:4]  # consecutive windows share doc_stride tokens
    answer_spans = {s for s in context_spans[-1] if s[1] > question.start and s[0] < question.start + len(answer)}
    assert len(answer_spans) == 5
    labelled = partial = 0
    for row, (start, end) in enumerate(windows.labels):
        spans = set(context_spans[row])
        if answer_spans <= spans:
            labelled += 1
            assert context[windows.offsets[row, start, 0]:windows.offsets[row, end, 1]] == answer
            assert windows.segment_ids[row, start] == 1 and windows.input_ids[row, 0] == 2
        else:  # a window that holds none or only part of the answer points at [CLS]
            assert (start, end) == (0, 0)
            partial += bool(answer_spans & spans)
    assert labelled == 1 and partial == 1


def test_best_span_no_answer_threshold_and_the_score_table():
    tokenizer = _ThreeLetters()
    questions = [Question("a", "q", "Ole bor i Aarhus", ["Aarhus"], 10, ""),
                 Question("b", "q", "Det regner", [], -1, ""),
                 Question("c", "q", "Hun hedder Mette", ["Mette"], 11, "")]
    windows = encode_questions(questions, tokenizer, seq_len=16, doc_stride=2, max_query_length=4,
                               max_answer_length=2)
    assert len(windows.input_ids) == 3  # one window each
    logits = np.zeros((3, 16, 2), np.float32)
    # a: "Aar hus" (tokens 6, 7 after [CLS] q [SEP] Ole bor i) at 5 + 5 over a null of 1 + 1.
    logits[0, 6, 0], logits[0, 7, 1], logits[0, 0] = 5, 5, 1
    # b: a span of 2 + 2 against a null of 3 + 3.
    logits[1, 3, 0], logits[1, 4, 1], logits[1, 0] = 2, 2, 3
    # c: the best start ("Hun", 3) is 5 tokens before the best end ("te", 7): over max_answer_length 2; the
    # best valid span is "Met te" (6, 7).
    logits[2, :, 1] = -5
    logits[2, 3, 0], logits[2, 7, 1], logits[2, 6, 0], logits[2, 0, 1] = 9, 4, 3, 0
    spans = best_spans(questions, windows, logits)
    assert spans[0] == ("Aarhus", pytest.approx(8.0)) and spans[1][1] == pytest.approx(-2.0)
    assert spans[2] == ("Mette", pytest.approx(7.0))
    threshold = best_threshold(questions, spans)
    assert -2.0 < threshold <= 7.0  # answers a and c, not b
    scores = squad_scores(questions, spans, None, with_null=True)
    assert scores == {"exact": 1.0, "f1": 1.0, "threshold": threshold, "has_answer_f1": 1.0, "no_answer_f1": 1.0}
    # A threshold tuned elsewhere is used as given; v1 answers every question.
    assert squad_scores(questions, spans, 10.0, with_null=True)["f1"] == pytest.approx(1 / 3)
    assert squad_scores(questions, spans, None, with_null=False)["exact"] == pytest.approx(2 / 3)


def test_squad_reader(tmp_path):
    path = tmp_path / "dev.json"
    context = "Ole bor i Aarhus."
    document = {"version": "v2.0", "data": [{"title": "t", "paragraphs": [{"context": context, "qas": [
        {"id": "1", "question": "Hvor bor Ole?", "answers": [{"text": "Aarhus", "answer_start": 10},
                                                               {"text": "i Aarhus", "answer_start": 8}]},
        {"id": "2", "question": "Hvor bor Mette?", "answers": [], "is_impossible": True},
        {"id": "3", "question": "Hvem bor der?", "answers": [{"text": "Ole", "answer_start": 3}]}]}]}]}
    path.write_text(json.dumps(document), encoding="utf-8")
    questions, misplaced = read_squad(path)
    assert [q.answers for q in questions] == [["Aarhus", "i Aarhus"], [], ["Ole"]]
    assert (questions[0].start, questions[1].start, questions[2].start, misplaced) == (10, -1, -1, 1)
    from electra_jax.finetune.tasks import TASKS
    from electra_jax.finetune.train import FinetuneOptions
    kept, note = TASKS["qa"].read(path, FinetuneOptions(task="qa"), training=True)
    assert [q.id for q in kept] == ["1", "2"] and note == ("1 without an answer (SQuAD v2), 1 answer(s) not at "
                                                           "their answer_start, left out")
    del document["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"]
    path.write_text(json.dumps(document), encoding="utf-8")
    with pytest.raises(FinetuneDataError, match=r"dev.json: data\[0\].paragraphs\[0\].qas\[0\] \(id 1\): every "
                                                r"answer needs \"text\" and \"answer_start\""):
        read_squad(path)
    path.write_text('{"data": [', encoding="utf-8")
    with pytest.raises(FinetuneDataError, match="dev.json: not SQuAD JSON"):
        read_squad(path)


def test_options_are_checked_before_anything_runs(tmp_path):
    from electra_jax.finetune.train import FinetuneOptions, finetune
    with pytest.raises(FinetuneDataError, match="--doc-stride 200 must be below the 61 context tokens"):
        finetune("x.json", "y.json", "run", tmp_path / "out", options=FinetuneOptions(task="qa", doc_stride=200))
    with pytest.raises(FinetuneDataError, match="--seq-len 64 leaves -3 context tokens"):
        finetune("x.json", "y.json", "run", tmp_path / "out", options=FinetuneOptions(task="qa", seq_len=64))
    assert not (tmp_path / "out").exists()


def test_token_offsets_are_the_characters_each_token_came_from(tmp_path):
    """WordPiece and (lower-casing) SentencePiece: each word's tokens cover its characters, in order."""
    words = ["Kongens", "Nytorv", "ligger", "i", "København", "Kongensgade", "17."]
    tokenizer = train_wordpiece(lambda: iter(["Kongens Nytorv ligger i København ."] * 3), 80)
    save_tokenizer(tokenizer, tmp_path / "wp")
    sentences = ["Kongens Nytorv ligger i København og Ærø ligger syd for Fyn ."] * 20
    save_sentencepiece(train_sentencepiece(iter(sentences), 30), tmp_path / "spm", lowercase=True,
                       strip_accents=False)
    pieces_of = load_text_tokenizer(tmp_path / "spm")
    for text in (load_text_tokenizer(tmp_path / "wp"), pieces_of):
        for word, pieces in zip(words + ["Ærø,"], text.encode_with_offsets(words + ["Ærø,"])):
            assert [i for i, _, _ in pieces] == text.encode_lines([word])[0]
            spans = [(a, b) for _, a, b in pieces if b > a]  # SentencePiece's lone "▁" spans nothing
            assert spans[0][0] == 0 and spans[-1][1] == len(word), (word, pieces)
            assert all(a[1] == b[0] for a, b in zip(spans, spans[1:]))  # contiguous
