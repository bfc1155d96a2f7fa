import numpy as np
import pytest

from electra_jax.data.default_corpus import generate_corpus
from electra_jax.data.pretraining import BatchLoader, build_examples, read_documents
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
    assert list(read_documents([path])) == [["a b", "c d"], ["e f"], ["g"]]
    assert list(read_documents([path], blank_lines_separate_docs=False)) == [["a b", "c d", "e f", "g"]]


def test_packing_layout(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(generate_corpus(200, seed=3), encoding="utf-8")
    tokenizer = train_wordpiece([path], 400)
    examples = build_examples([path], tokenizer, seq_len=48, short_seq_prob=0.1, seed=0)
    ids, segments = examples["input_ids"], examples["segment_ids"]
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    assert ids.shape[1] == 48 and len(ids) > 100
    assert (ids[:, 0] == cls).all()
    for row, seg in zip(ids, segments):
        real = row[row != 0]
        assert (row[len(real):] == 0).all() and real[-1] == sep
        seps = np.nonzero(real == sep)[0]
        assert len(seps) in (1, 2)
        # Segment B (ids 1) starts right after the first [SEP] and runs to the last.
        assert (seg[: seps[0] + 1] == 0).all() and (seg[seps[0] + 1: len(real)] == 1).all()
    assert (segments.max(1) == 1).mean() > 0.3  # most examples have two segments
    lengths = (ids != 0).sum(1)
    assert (lengths > 40).mean() > 0.5  # most packed close to full length (document ends are shorter)


def test_loader_is_stateless_and_splits_hosts():
    examples = {"input_ids": np.arange(100)[:, None].repeat(4, 1), "segment_ids": np.zeros((100, 4), np.int32)}
    loader = BatchLoader(examples, batch_size=8, seed=1)
    first_epoch = np.concatenate([loader.local_batch(s)["input_ids"][:, 0] for s in range(12)])
    assert len(set(first_epoch.tolist())) == 96  # no repeats within an epoch
    again = BatchLoader(examples, batch_size=8, seed=1).local_batch(7)["input_ids"]
    assert (again == loader.local_batch(7)["input_ids"]).all()
    hosts = [BatchLoader(examples, 8, seed=1, process_index=i, process_count=2).local_batch(5)["input_ids"]
             for i in range(2)]
    assert (np.concatenate(hosts) == loader.local_batch(5)["input_ids"]).all()
    with pytest.raises(ValueError, match="fewer than train.batch_size"):
        BatchLoader(examples, batch_size=128, seed=0)
