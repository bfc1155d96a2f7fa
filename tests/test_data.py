import pytest

from electra_jax.data.sources import SkipReport, parse_source, read_documents
from electra_jax.data.tokenizer import load_tokenizer, save_tokenizer, train_wordpiece

DANISH = ("Åse spiser æbler på øen ved Ålborg.\nSøren går på skole i Århus og læser bøger.\n"
          "Niño y señor comen en España.\n") * 50


@pytest.fixture()
def text_file(tmp_path):
    path = tmp_path / "da.txt"
    path.write_text(DANISH, encoding="utf-8")
    return path


def test_default_tokenizer_is_cased_and_keeps_accents(text_file, tmp_path):
    tokenizer = train_wordpiece([text_file], 300)
    vocab = tokenizer.get_vocab()
    for char in ("æ", "ø", "å", "Å", "ñ"):
        assert char in vocab or f"##{char}" in vocab, char
    encoding = tokenizer.encode("Åse går på øen")
    assert "[UNK]" not in encoding.tokens
    assert tokenizer.decode(encoding.ids) == "Åse går på øen"
    save_tokenizer(tokenizer, tmp_path / "tok")
    assert load_tokenizer(tmp_path / "tok").encode("Ålborg").tokens == tokenizer.encode("Ålborg").tokens
    assert (tmp_path / "tok" / "vocab.txt").read_text(encoding="utf-8").splitlines()[:5] == \
        ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def test_lowercase_and_accent_stripping_are_independent(text_file):
    lower_only = train_wordpiece([text_file], 300, lowercase=True, strip_accents=False)
    assert lower_only.decode(lower_only.encode("Ålborg").ids) == "ålborg"
    strip_only = train_wordpiece([text_file], 300, lowercase=False, strip_accents=True)
    assert strip_only.decode(strip_only.encode("Ålborg Niño").ids) == "Alborg Nino"


def test_blank_lines_separate_documents(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("a b\nc d\n\n\ne f\n\ng\n", encoding="utf-8")
    sources = [parse_source(str(path))]
    assert list(read_documents(sources, SkipReport())) == [["a b", "c d"], ["e f"], ["g"]]
    assert list(read_documents(sources, SkipReport(), blank_lines_separate_docs=False)) == [["a b", "c d", "e f", "g"]]
