"""Held-out evaluation: whole documents held out at packing and never read for training, and the same eval
values whenever the same parameters are evaluated."""
import collections
import json

import jax
import numpy as np
import pytest

from electra_jax.config import ConfigError, load_config
from electra_jax.data.default_corpus import generate_corpus
from electra_jax.data.loader import PretrainingData, held_out_batches
from electra_jax.data.prepare import PackOptions, held_out, prepare, read_metadata
from electra_jax.data.text_tokenizer import load_text_tokenizer
from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece
from electra_jax.metrics import read_metrics
from tests.conftest import REPO, TINY

pytestmark = pytest.mark.slow  # trains end to end (make test-fast leaves it out)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("eval") / "corpus.txt"
    path.write_text(generate_corpus(1000, seed=3), encoding="utf-8")  # ~300 kB: two work units
    return path


@pytest.fixture(scope="module")
def tokenizer(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok")
    save_tokenizer(train_wordpiece([corpus], 300), out)
    return out


def _documents(path):
    return [block.split("\n") for block in path.read_text(encoding="utf-8").strip("\n").split("\n\n")]


def _records(folder, shards):
    from array_record.python.array_record_module import ArrayRecordReader
    records = []
    for shard in shards:
        reader = ArrayRecordReader(str(folder / shard["file"]))
        records += reader.read_all()
        reader.close()
    return records


def _padded(records, dtype, seq_len):
    """Each record's input ids as the loader gives them (padded with 0), as bytes."""
    from electra_jax.data.packing import decode_record
    return [decode_record(r, dtype, seq_len, 0)["input_ids"].tobytes() for r in records]


def _tokens(records, dtype, specials):
    """The multiset of the records' token ids, [CLS] and [SEP] left out."""
    ids = np.concatenate([np.frombuffer(r, dtype)[2:] for r in records]).astype(np.int64)
    return collections.Counter(ids[(ids != specials.cls) & (ids != specials.sep)].tolist())


def test_eval_documents_are_held_out_whole_and_never_trained_on(corpus, tokenizer, tmp_path):
    options = PackOptions(seq_len=32, eval_fraction=0.1)
    metadata = prepare([str(corpus)], tokenizer, tmp_path / "p", options, workers=0, progress=False, log=lambda _: 0)
    folder, dtype = tmp_path / "p", np.dtype(metadata["record_dtype"])
    train, held = _records(folder, metadata["shards"]), _records(folder, metadata["eval"]["shards"])
    documents = _documents(corpus)
    chosen = [held_out(document, options.seed, 0.1) for document in documents]
    assert 0.06 < np.mean(chosen) < 0.14 and metadata["eval"]["documents"] == sum(chosen)
    # Whole documents: the eval records hold exactly the tokens of the chosen documents, train the rest.
    text_tokenizer = load_text_tokenizer(tokenizer)
    per_document = [collections.Counter(i for line in text_tokenizer.encode_lines(document) for i in line)
                    for document in documents]
    expected_eval = sum((c for c, keep in zip(per_document, chosen) if keep), collections.Counter())
    expected_train = sum((c for c, keep in zip(per_document, chosen) if not keep), collections.Counter())
    assert _tokens(held, dtype, text_tokenizer.specials) == expected_eval
    assert _tokens(train, dtype, text_tokenizer.specials) == expected_train
    # The training iterator reads train records only: one epoch of it is a sub-multiset of them (two documents
    # may share a short line, so a train and an eval record can be equal; the token counts above are exact).
    data, batches = PretrainingData(folder, 16, seed=0), len(train) // 16
    seen = collections.Counter(row.tobytes() for _ in range(batches) for row in next(data)["input_ids"])
    train_rows = collections.Counter(_padded(train, dtype, 32))
    assert sum(seen.values()) == batches * 16 and not seen - train_rows
    eval_rows = [row.tobytes() for batch in held_out_batches(folder, "eval", 16, 100) for row in batch["input_ids"]]
    assert len(eval_rows) == len(held) // 16 * 16 and not collections.Counter(eval_rows) - collections.Counter(
        _padded(held, dtype, 32))
    # The split is a property of the text and the seed: the same with workers, and across runs.
    again = prepare([str(corpus)], tokenizer, tmp_path / "q", options, workers=2, progress=False, log=lambda _: 0)
    assert _records(tmp_path / "q", again["eval"]["shards"]) == held
    assert _records(tmp_path / "q", again["shards"]) == train


def _tiny(tmp_path, corpus, *overrides):
    return load_config(REPO / "configs" / "electra_smoke.yaml",
                       [*TINY, f"data.corpus=[{corpus}]", "data.eval_fraction=0.1", "train.steps=12",
                        "train.eval_every=5", "train.eval_batches=2", "checkpoint.every_steps=6", "mesh.data=-1",
                        *overrides])


def test_eval_metrics_are_logged_and_identical_on_the_same_parameters(tmp_path, corpus):
    from electra_jax.run_dir import special_ids
    from electra_jax.train import make_evaluate, pretrain, setup_training
    from electra_jax.checkpoint import Checkpointer
    from electra_jax.mesh import make_mesh
    config = _tiny(tmp_path, corpus)
    run = tmp_path / "run"
    summary = pretrain(config, run, log=lambda _: None, progress=False)
    records = read_metrics(run / "metrics.jsonl")
    evaluated = {r["step"]: r for r in records if "eval_loss" in r}
    assert sorted(evaluated) == [5, 10, 12]  # every train.eval_every steps and at the end
    names = {"eval_generator_loss", "eval_generator_accuracy", "eval_discriminator_loss",
             "eval_discriminator_accuracy", "eval_discriminator_auc", "eval_replaced_precision",
             "eval_replaced_recall", "eval_replaced_f1"}
    assert names <= set(evaluated[12]) and 0.0 <= evaluated[12]["eval_discriminator_auc"] <= 1.0
    assert summary["final"]["eval_loss"] == evaluated[12]["eval_loss"]
    # The step-12 parameters from the checkpoint, evaluated twice here: both equal the logged values.
    config = load_config(run / "config.yaml")
    metadata = read_metadata(run / "data" / "prepared_L32")
    training = setup_training(config, make_mesh(config), special_ids(metadata))  # the run's 8-device mesh
    checkpointer = Checkpointer(run / "checkpoints", config.checkpoint)
    state = checkpointer.restore(12, training.abstract_state, None)
    checkpointer.close()
    evaluate = make_evaluate(config, training, (run / "data" / "prepared_L32", "eval"), (), lambda _: None)
    first, second = evaluate(state.params), evaluate(state.params)
    for name in names | {"eval_loss"}:
        assert first[name] == second[name], name
        assert first[name] == pytest.approx(evaluated[12][name], abs=1e-6), name


def test_eval_data_errors_are_one_line(tmp_path, corpus, tokenizer):
    from electra_jax.train import pretrain
    plain = tmp_path / "plain"
    prepare([str(corpus)], tokenizer, plain, PackOptions(seq_len=32), workers=0, progress=False, log=lambda _: 0)
    cases = [
        (["data.corpus=[]", f"data.prepared={plain}"], "was packed with no held-out split"),
        (["data.corpus=[]", f"data.prepared={plain}", "data.eval_fraction=0", f"data.eval_prepared={tmp_path}"],
         "has no metadata.json"),
        (["train.eval_batches=0"], "train.eval_batches"),
        (["data.eval_fraction=1.0"], "data.eval_fraction"),
        ([f"data.eval_prepared={plain}"], "not both"),
    ]
    for overrides, expected in cases:
        with pytest.raises(ConfigError, match=expected) as err:
            pretrain(_tiny(tmp_path, corpus, *overrides), tmp_path / "bad", log=lambda _: None, progress=False)
        assert "\n" not in str(err.value)
    # A separate prepared folder with another tokenizer is refused before any compile.
    other = tmp_path / "other_tok"
    save_tokenizer(train_wordpiece([corpus], 250), other)
    foreign = tmp_path / "foreign"
    prepare([str(corpus)], other, foreign, PackOptions(seq_len=32), workers=0, progress=False, log=lambda _: 0)
    with pytest.raises(ConfigError, match="another tokenizer"):
        pretrain(_tiny(tmp_path, corpus, "data.corpus=[]", f"data.prepared={plain}", "data.eval_fraction=0",
                       f"data.eval_prepared={foreign}"), tmp_path / "bad2", log=lambda _: None, progress=False)
    # A run directory packed with one eval share refuses another.
    run = tmp_path / "run"
    pretrain(_tiny(tmp_path, corpus, "train.steps=3", "train.eval_every=0"), run, log=lambda _: None, progress=False)
    with pytest.raises(ConfigError, match="packed with eval fraction 0.1"):
        pretrain(_tiny(tmp_path, corpus, "data.eval_fraction=0.2"), run, log=lambda _: None, progress=False)
    assert json.loads((run / "data" / "prepared_L32" / "metadata.json").read_text())["eval"]["fraction"] == 0.1


def test_albert_evaluates_mlm_and_sop_the_same_twice(tmp_path, corpus):
    from electra_jax.mesh import make_mesh
    from electra_jax.run_dir import prepare_data, special_ids
    from electra_jax.train import make_evaluate, setup_training
    from tests.test_train_albert import TINY_ALBERT
    config = load_config(REPO / "configs" / "albert_smoke.yaml",
                         [*TINY_ALBERT, f"data.corpus=[{corpus}]", "data.eval_fraction=0.1", "train.steps=10"])
    config, (folder,), metadata = prepare_data(config, tmp_path, log=lambda _: None)
    assert metadata["format"] == "albert" and metadata["eval"]["examples"] >= 32
    word_starts = load_text_tokenizer(tmp_path / "tokenizer").word_starts()
    training = setup_training(config, make_mesh(config, jax.devices()[:1]), special_ids(metadata), word_starts)
    evaluate = make_evaluate(config, training, (folder, "eval"), (), lambda _: None)
    params = training.init().params
    first, second = evaluate(params), evaluate(params)
    assert {"eval_mlm_loss", "eval_mlm_accuracy", "eval_sop_loss", "eval_sop_accuracy"} <= set(first)
    assert all(first[name] == second[name] for name in first if name != "eval_seconds")
