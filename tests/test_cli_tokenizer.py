"""`electra-jax tokenizer train`: both kinds load in transformers with the ids we prepare with; the coverage
report names lost letters."""
import json

import pytest

from electra_jax.cli import main
from electra_jax.data.default_corpus import generate_corpus
from electra_jax.data.text_tokenizer import load_text_tokenizer

SENTENCES = ["Åse går på øen ved Ålborg.", "Niño y señor comen en España.", "ÆBLER og ØL i ÅRHUS!",
             "Søren  tæller\ten, to, tre ``hej''.", "Mette ser Karen i København i går."]
MIXED = "\n".join(SENTENCES) + "\n" + "Niño señor España. Año mañana. ¿Qué tal?\n" * 30


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("tokcorpus") / "corpus.txt"
    path.write_text(generate_corpus(400, seed=9) + MIXED, encoding="utf-8")
    return path


def _hf_ids(folder, text):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(str(folder))(text)["input_ids"]


def test_wordpiece_loads_in_transformers_with_our_ids(corpus, tmp_path, capsys):
    out = tmp_path / "wp"
    assert main(["tokenizer", "train", "--input", str(corpus), "--out", str(out), "--vocab-size", "600",
                 "--unused", "3"]) == 0
    printed = capsys.readouterr().out
    assert "unknown-token rate" in printed and "letters lost: none" in printed
    vocab = (out / "vocab.txt").read_text(encoding="utf-8").splitlines()
    assert vocab[:8] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[unused0]", "[unused1]", "[unused2]"]
    ours = load_text_tokenizer(out)
    for sentence in SENTENCES:
        ids = ours.encode_lines([sentence])[0]
        assert ours.specials.unk not in ids
        assert _hf_ids(out, sentence) == [ours.specials.cls, *ids, ours.specials.sep]
    assert ours.encode_lines(["[unused1]"])[0] == [6]  # reserved slots are whole tokens


@pytest.mark.parametrize("lowercase", [False, True])
def test_sentencepiece_loads_in_transformers_with_our_ids(corpus, tmp_path, lowercase):
    out = tmp_path / "spm"
    assert main(["tokenizer", "train", "--kind", "sentencepiece", "--input", str(corpus), "--out", str(out),
                 "--vocab-size", "400", *(["--lowercase"] if lowercase else [])]) == 0
    ours = load_text_tokenizer(out)
    assert ours.kind == "sentencepiece" and ours.vocab_size == 400
    assert (ours.specials.pad, ours.specials.unk, ours.specials.cls, ours.specials.sep, ours.specials.mask) == (0, 1, 2, 3, 4)
    for sentence in SENTENCES:
        ids = ours.encode_lines([sentence])[0]
        assert _hf_ids(out, sentence) == [2, *ids, 3], sentence
    pieces = [ours.processor.id_to_piece(i) for i in ours.encode_lines(["Åse går på øen"])[0]]
    assert ("".join(pieces).replace("▁", " ").strip() == ("åse går på øen" if lowercase else "Åse går på øen"))
    from transformers import AutoTokenizer
    pair = AutoTokenizer.from_pretrained(str(out))("Åse går", "på øen")
    assert set(pair["token_type_ids"]) == {0, 1}


def test_coverage_report_names_lost_letters(corpus, tmp_path, capsys):
    out = tmp_path / "small-alphabet"
    assert main(["tokenizer", "train", "--input", str(corpus), "--out", str(out), "--vocab-size", "300",
                 "--limit-alphabet", "40"]) == 0
    coverage = json.loads((out / "coverage.json").read_text(encoding="utf-8"))
    assert coverage["lost_letters"] and coverage["unknown_rate"] > 0
    assert "ñ" in coverage["lost_letters"] or "Å" in coverage["lost_letters"]
    printed = capsys.readouterr().out
    assert "letters lost (" in printed and "U+" in printed
    # Stripping accents is a choice, not a loss: å becomes a and nothing is reported lost.
    stripped = tmp_path / "stripped"
    assert main(["tokenizer", "train", "--input", str(corpus), "--out", str(stripped), "--vocab-size", "400",
                 "--strip-accents"]) == 0
    assert json.loads((stripped / "coverage.json").read_text())["lost_letters"] == {}
    assert load_text_tokenizer(stripped).tokenizer.decode(load_text_tokenizer(stripped).encode_lines(["Åse"])[0]) == "Ase"


def test_tokenizer_errors_are_one_line(corpus, tmp_path, capsys):
    cases = [(["--kind", "sentencepiece", "--limit-alphabet", "50"], "--limit-alphabet is a WordPiece option"),
             (["--vocab-size", "10"], "--vocab-size must be at least 100"),
             (["--input", str(tmp_path / "none.txt")], "matches no file"),
             (["--kind", "sentencepiece", "--vocab-size", "50000"], "sentencepiece could not train on this corpus")]
    for extra, message in cases:
        argv = ["tokenizer", "train", "--input", str(corpus), "--out", str(tmp_path / "x"), *extra]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert not (tmp_path / "x").exists()
