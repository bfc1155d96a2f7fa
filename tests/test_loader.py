"""The Grain loader over prepared shards: host slices, exact restore from an Orbax checkpoint."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from electra_jax.checkpoint import Checkpointer
from electra_jax.config import CheckpointConfig
from electra_jax.data.loader import PretrainingData
from electra_jax.data.prepare import PackOptions, prepare
from electra_jax.data.tokenizer import save_tokenizer, train_wordpiece

DOCUMENTS = 1001  # odd: one example is left over when two hosts split them


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """One single-line document per example, each with its own number: examples are all different."""
    folder = tmp_path_factory.mktemp("loader")
    corpus = folder / "corpus.txt"
    corpus.write_text("".join(f"linje {i} har tallet {i * 7} og {i % 13}\n\n" for i in range(DOCUMENTS)))
    save_tokenizer(train_wordpiece([corpus], 200), folder / "tok")
    prepare([str(corpus)], folder / "tok", folder / "data", PackOptions(seq_len=24, examples_per_shard=300),
            workers=0, progress=False, log=lambda _: None)
    return folder / "data"


def _key(row) -> bytes:
    return np.asarray(row).tobytes()


def test_two_hosts_get_disjoint_slices_that_cover_the_data(prepared):
    from array_record.python.array_record_module import ArrayRecordReader
    from electra_jax.data.packing import decode_record
    from electra_jax.data.prepare import read_metadata
    metadata = read_metadata(prepared)
    every = set()
    for shard in metadata["shards"]:
        reader = ArrayRecordReader(str(prepared / shard["file"]))
        every |= {_key(decode_record(r, np.dtype(metadata["record_dtype"]), 24, 0)["input_ids"]) for r in reader.read_all()}
    assert len(every) == metadata["counts"]["examples"] == DOCUMENTS
    hosts = [PretrainingData(prepared, global_batch=20, seed=3, process_index=i, process_count=2) for i in range(2)]
    seen = []
    for host in hosts:
        rows = [_key(row) for _ in range(DOCUMENTS // 2 // 10) for row in next(host)["input_ids"]]
        assert len(rows) == len(set(rows)) == 500  # one epoch of this host's slice, no repeats
        seen.append(set(rows))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == 1000 and (seen[0] | seen[1]) <= every  # all but the one left over
    # The next epoch is a new permutation.
    assert [_key(r) for r in next(hosts[0])["input_ids"]] != [_key(r) for r in
                                                           next(PretrainingData(prepared, 20, 3, 0, 2))["input_ids"]]


def test_iterator_restores_exactly_from_a_checkpoint(prepared, tmp_path):
    state = {"w": jnp.arange(4.0)}
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding), state)
    straight = PretrainingData(prepared, global_batch=16, seed=0)
    expected = [next(straight) for _ in range(12)]

    data = PretrainingData(prepared, global_batch=16, seed=0)
    checkpointer = Checkpointer(tmp_path / "ck", CheckpointConfig(every_steps=1, keep=2, async_save=True))
    for _ in range(7):
        next(data)
    snapshot = data.saved_state()
    next(data)  # the saved state is fixed when the save is asked for, not when it is written
    assert json.loads(snapshot.get_state()) == {"next_index": 7}
    data = PretrainingData(prepared, global_batch=16, seed=0)
    for _ in range(7):
        next(data)
    checkpointer.save(7, state, data)
    checkpointer.close()

    resumed = PretrainingData(prepared, global_batch=16, seed=0)
    restored = Checkpointer(tmp_path / "ck", CheckpointConfig()).restore(7, abstract, resumed)
    np.testing.assert_array_equal(restored["w"], state["w"])
    for want in expected[7:]:
        got = next(resumed)
        for name in want:
            np.testing.assert_array_equal(got[name], want[name])

    with pytest.raises(ValueError, match=r"resume: checkpoint 7 was written for other data or batching "
                                         r"\(global_batch 16 -> 8\)"):
        Checkpointer(tmp_path / "ck", CheckpointConfig()).restore(7, abstract, PretrainingData(prepared, 8, seed=0))


def test_too_little_data_for_one_batch(prepared):
    with pytest.raises(ValueError, match="fewer than the 1000 of one batch"):
        PretrainingData(prepared, global_batch=2000, seed=0, process_index=0, process_count=2)
