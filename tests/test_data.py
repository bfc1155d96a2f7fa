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


def test_the_same_corpus_gives_a_byte_identical_vocabulary(tmp_path, shared_data):
    """Three `tokenizer train` runs (the trainer alone gave three different vocab.txt: tokenizers #1794)."""
    from electra_jax.cli import main
    corpus = shared_data / "raw_text" / "libreoffice_help_da.txt"
    for run in range(3):
        assert main(["tokenizer", "train", "--input", str(corpus), "--vocab-size", "8000",
                     "--out", str(tmp_path / f"run{run}")]) == 0
    for name in ("vocab.txt", "tokenizer.json"):
        contents = {(tmp_path / f"run{run}" / name).read_bytes() for run in range(3)}
        assert len(contents) == 1, name
    assert len((tmp_path / "run0" / "vocab.txt").read_text().splitlines()) == 8000


def test_a_limited_alphabet_is_chosen_the_same_way_every_time(text_file):
    vocabularies = [train_wordpiece([text_file], 120, limit_alphabet=20).get_vocab() for _ in range(3)]
    assert vocabularies[0] == vocabularies[1] == vocabularies[2]
    singles = [t for t in vocabularies[0] if len(t) == 1]
    assert len(singles) == 20


def test_words_longer_than_the_model_encodes_are_left_out_of_training(tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(DANISH + "x" * 5000 + " " + "ab," * 2000 + "\n", encoding="utf-8")
    report = SkipReport()
    tokenizer = train_wordpiece(lambda: iter(path.read_text(encoding="utf-8").splitlines()), 200, report=report)
    assert report.overlong_words_dropped == 1  # the 5000 x's; "ab,ab,..." splits at its commas
    assert not any(len(t.removeprefix("##")) > 100 for t in tokenizer.get_vocab())


# The peak from /proc (VmHWM: this process image's own high-water mark; getrusage's ru_maxrss also counts the
# forking pytest worker, as Linux carries it across exec).
LONG_LINE = """
import re, sys, time
from electra_jax.cli import main
start = time.perf_counter()
code = main(["tokenizer", "train", "--input", sys.argv[1], "--vocab-size", "2000", "--out", sys.argv[2]])
peak_kb = re.search(r"VmHWM:\\s+(\\d+) kB", open("/proc/self/status").read()).group(1)
print(code, time.perf_counter() - start, int(peak_kb) * 1024)
"""


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["words", "no_spaces"])
def test_a_50_mb_line_trains_in_seconds_with_bounded_memory(tmp_path, kind):
    import subprocess
    import sys
    path = tmp_path / "line.txt"
    with open(path, "w", encoding="utf-8") as handle:
        piece = " ".join(DANISH.split()) + " " if kind == "words" else "abcdefghij" * 10_000
        for _ in range(50_000_000 // len(piece.encode()) + 1):
            handle.write(piece)
        handle.write("\n")
    result = subprocess.run([sys.executable, "-c", LONG_LINE, str(path), str(tmp_path / "tok")], capture_output=True,
                            text=True, timeout=300)
    code, seconds, peak_bytes = result.stdout.strip().splitlines()[-1].split()
    assert code == "0", result.stderr
    assert float(seconds) < 60 and int(peak_bytes) < 1 << 30, (seconds, peak_bytes)
