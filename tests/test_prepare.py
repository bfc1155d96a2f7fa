"""`electra-jax prepare`: determinism across worker counts, the skip summary, the three kinds of source."""
import gzip
import hashlib
import json
import random
import subprocess
import sys

import numpy as np
import pytest

from electra_jax.cli import main
from electra_jax.data.default_corpus import generate_corpus
from electra_jax.data.packing import decode_record
from electra_jax.data.prepare import PackOptions, prepare, read_metadata
from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
from tests.conftest import REPO


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("prep") / "corpus.txt"
    path.write_text(generate_corpus(3000, seed=5), encoding="utf-8")  # ~0.9 MB: several work units
    return path


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_wordpiece([corpus], 500), out)
    return out


def _digests(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def _records(folder):
    from array_record.python.array_record_module import ArrayRecordReader
    metadata = read_metadata(folder)
    records = []
    for shard in metadata["shards"]:
        reader = ArrayRecordReader(str(folder / shard["file"]))
        records += reader.read_all()
        reader.close()
    return metadata, records


def test_same_bytes_for_one_and_two_workers(corpus, tokenizer, tmp_path):
    options = PackOptions(seq_len=64, examples_per_shard=2000)
    one = prepare([str(corpus)], tokenizer, tmp_path / "one", options, workers=1, progress=False, log=lambda _: None)
    two = prepare([str(corpus)], tokenizer, tmp_path / "two", options, workers=2, progress=False, log=lambda _: None)
    assert one == two and len(one["shards"]) > 1
    assert _digests(tmp_path / "one") == _digests(tmp_path / "two")
    metadata, records = _records(tmp_path / "one")
    assert len(records) == metadata["counts"]["examples"] == sum(s["examples"] for s in metadata["shards"])
    example = decode_record(records[0], np.dtype(metadata["record_dtype"]), 64, metadata["tokenizer"]["special_ids"]["pad"])
    assert example["input_ids"][0] == metadata["tokenizer"]["special_ids"]["cls"]
    # A different seed packs differently; the same seed in process (0 workers) gives the same bytes again.
    zero = prepare([str(corpus)], tokenizer, tmp_path / "zero", options, workers=0, progress=False, log=lambda _: None)
    assert _digests(tmp_path / "zero") == _digests(tmp_path / "one") and zero == one
    other = prepare([str(corpus)], tokenizer, tmp_path / "seed1", PackOptions(seq_len=64, seed=1,
                    examples_per_shard=2000), workers=0, progress=False, log=lambda _: None)
    def text_tokens(counts):  # without [CLS] and the one or two [SEP]
        return counts["tokens"] - 3 * counts["examples"] + counts["single_segment"]
    assert text_tokens(other["counts"]) == text_tokens(one["counts"])
    assert _digests(tmp_path / "seed1")["shard-00000.array_record"] != _digests(tmp_path / "one")["shard-00000.array_record"]


def test_skip_summary_on_a_messy_corpus(tokenizer, tmp_path):
    folder = tmp_path / "messy"
    folder.mkdir()
    good = "Åse går på øen ved Ålborg og læser en bog.\nSøren tæller en, to, tre.\n\nNy historie om Mette.\n"
    (folder / "a_good.txt").write_text(good, encoding="utf-8")
    (folder / "b_invalid_utf8.txt").write_bytes(b"Anna bor i K\xf8benhavn og \xe6der.\nMette \xff\xfe ser en bil.\n"
                                                 b"Helt \x00\x01 binaer linje\n")
    (folder / "c_junk.bin").write_bytes(random.Random(0).randbytes(200_000))
    (folder / "d_empty.txt").write_bytes(b"")
    (folder / "e_blank.txt").write_bytes(b"\n\n  \n")
    (folder / "f_long_line.txt").write_text("Vi tæller en to tre fire fem seks syv otte ni ti. " * 200_000 + "\n",
                                            encoding="utf-8")  # one 10 MB line
    with gzip.open(folder / "g_more.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write(good * 3)
    whole = gzip.compress((good * 2000).encode())
    (folder / "h_cut.txt.gz").write_bytes(whole[:len(whole) // 2])  # a download that stopped half-way
    lines = []
    metadata = prepare([str(folder / "*")], tokenizer, tmp_path / "out", PackOptions(seq_len=64), workers=0,
                       progress=False, log=lines.append)
    skipped, counts = metadata["skipped"], metadata["counts"]
    assert skipped["binary_files"] == [str(folder / "c_junk.bin")]
    assert skipped["damaged_files"] == [str(folder / "h_cut.txt.gz")]
    assert skipped["empty_files"] == [str(folder / "d_empty.txt"), str(folder / "e_blank.txt")]
    assert skipped["invalid_utf8_lines_repaired"] == 2 and skipped["invalid_utf8_bytes_removed"] == 4
    assert skipped["binary_lines_dropped"] == 1
    assert skipped["overlong_lines_split"] == 1 and skipped["documents_split"] >= 1
    assert skipped["files"] == 5  # good, invalid UTF-8 (repaired), the long line, the two .gz
    summary = [line for line in lines if line.startswith("skipped or repaired:")][0]
    for words in ("1 binary or non-UTF-8 files (", "2 empty files (", "1 damaged files, read up to the damage (",
                  "2 invalid UTF-8 lines repaired", "4 invalid UTF-8 bytes removed",
                  "1 binary or non-UTF-8 lines dropped", "1 overlong lines split"):
        assert words in summary, (words, summary)
    # The 10 MB line is packed, not lost: ~2.3M tokens of it in examples of at most 64.
    assert counts["tokens"] > 2_000_000 and counts["trimmed_tokens"] == 0
    assert len(metadata["sources"][0]["files"]) == 8
    assert counts["lines"] > 9 + 3 * 4 + 100  # the readable first half of the cut .gz is kept


def test_a_file_without_blank_lines_is_read_in_bounded_pieces(tmp_path):
    from electra_jax.data.sources import MAX_DOCUMENT_CHARS, SkipReport, parse_source, read_documents
    path = tmp_path / "one_document.txt"
    path.write_text("En linje uden tomme linjer imellem.\n" * 150_000, encoding="utf-8")  # 5.4 MB, no blank line
    report = SkipReport()
    sizes = [sum(map(len, document)) for document in read_documents([parse_source(str(path))], report)]
    assert max(sizes) <= MAX_DOCUMENT_CHARS and len(sizes) == report.documents_split + 1 >= 5
    assert sum(sizes) == 150_000 * 35


def test_errors_are_one_line_and_nothing_is_overwritten(corpus, tokenizer, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious")
    fake_gz = tmp_path / "plain.txt.gz"
    fake_gz.write_text("not compressed\n")
    cases = [
        (["--input", str(corpus), "--tokenizer", str(tokenizer), "--out", str(out)], "exists and is not empty"),
        (["--input", str(tmp_path / "missing*.txt"), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "n")],
         "matches no file"),
        (["--input", str(corpus), "--tokenizer", str(tmp_path), "--out", str(tmp_path / "n")], "neither tokenizer.json"),
        (["--input", str(corpus), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "n"), "--seq-len", "4"],
         "--seq-len must be at least 8"),
        (["--input", "hf:" + str(tmp_path / "nowhere"), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "n")],
         "no dataset folder"),
        (["--input", str(fake_gz), "--tokenizer", str(tokenizer), "--out", str(tmp_path / "n")], "is not gzip data"),
    ]
    for argv, message in cases:
        assert main(["prepare", "--no-progress", *argv]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0], err
    assert (out / "keep.txt").read_text() == "precious" and not (tmp_path / "n").exists()


def test_local_hf_dataset(tokenizer, tmp_path):
    datasets = pytest.importorskip("datasets")
    texts = [generate_corpus(1, seed=s).strip().replace("\n\n", "\n") for s in range(60)]
    records = [*texts[:30], " \n ", None, *texts[30:]]  # two records without text
    datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": records, "id": list(range(62))})}).save_to_disk(
        str(tmp_path / "hf"))
    lines = []
    metadata = prepare([f"hf:{tmp_path / 'hf'}:train"], tokenizer, tmp_path / "out", PackOptions(seq_len=64),
                       workers=0, progress=False, log=lines.append)
    assert metadata["counts"]["documents"] == 60 and metadata["skipped"]["empty_records"] == 2
    assert "2 empty records" in lines[-1]
    assert metadata["counts"]["lines"] == sum(len(t.splitlines()) for t in texts)
    with pytest.raises(ValueError, match="has no column 'body'"):
        prepare([f"hf:{tmp_path / 'hf'}:train"], tokenizer, tmp_path / "o2", PackOptions(text_field="body"),
                workers=0, progress=False)
    with pytest.raises(ValueError, match=r"name a split as hf:PATH:SPLIT \(splits: train\)"):
        prepare([f"hf:{tmp_path / 'hf'}"], tokenizer, tmp_path / "o3", workers=0, progress=False)


TFDS_BUILDER = '''
import sys
import tensorflow_datasets as tfds
tfds.disable_progress_bar()

class TinyText(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="da")]

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"title": tfds.features.Text(), "text": tfds.features.Text()}), disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 40), "validation": self._generate_examples(40, 50)}

    def _generate_examples(self, start, stop):
        for i in range(start, stop):
            yield f"doc{i}", {"title": f"Titel {i}", "text": f"Åse går på øen {i}.\\nSøren tæller en, to, tre.\\n"}

TinyText(data_dir=sys.argv[1], file_format="array_record").download_and_prepare()
'''


def test_local_tfds_dataset_without_tensorflow(tokenizer, tmp_path):
    pytest.importorskip("tensorflow_datasets")
    # Built in another process, as a user's data_dir would be: this process only knows the name.
    (tmp_path / "build.py").write_text(TFDS_BUILDER)
    subprocess.run([sys.executable, str(tmp_path / "build.py"), str(tmp_path / "tfds")], check=True,
                   capture_output=True, cwd=REPO)
    options = PackOptions(seq_len=32, tfds_data_dir=str(tmp_path / "tfds"))
    metadata = prepare(["tfds:tiny_text/da:validation"], tokenizer, tmp_path / "out", options, workers=0,
                       progress=False, log=lambda _: None)
    assert metadata["counts"]["documents"] == 10 and metadata["counts"]["lines"] == 20
    assert json.loads((tmp_path / "out" / "metadata.json").read_text())["sources"][0]["kind"] == "tfds"
    with pytest.raises(ValueError, match="has no field 'body'"):
        prepare(["tfds:tiny_text/da"], tokenizer, tmp_path / "o2", PackOptions(text_field="body",
                tfds_data_dir=str(tmp_path / "tfds")), workers=0, progress=False)
    with pytest.raises(ValueError, match="cannot open tfds:nonexistent_set"):
        prepare(["tfds:nonexistent_set"], tokenizer, tmp_path / "o3", options, workers=0, progress=False)
