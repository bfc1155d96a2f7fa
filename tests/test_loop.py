"""The loop keeps the device fed: step N + 1 is dispatched before step N's metrics are read, nothing else in
the loop reads a device value (the learning rate comes with the step's metrics), and the reader threads that
accelerators get resume exactly."""
import json

import jax
import numpy as np
import pytest

from electra_jax import train
from electra_jax.config import load_config
from electra_jax.data.loader import PretrainingData
from electra_jax.metrics import read_metrics
from tests.conftest import TINY


@pytest.mark.slow  # trains
def test_step_n_plus_1_is_dispatched_before_step_n_is_read(prepared, tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(train, "overlaps_steps", lambda platform: True)  # as on a TPU or GPU, here on a CPU
    real_setup, real_to_host = train.setup_training, train._to_host

    def recording_setup(*args, **kwargs):
        training = real_setup(*args, **kwargs)

        def step_fn(*step_args):
            out = training.step_fn(*step_args)
            events.append("dispatch")
            return out
        return training._replace(step_fn=step_fn)

    monkeypatch.setattr(train, "setup_training", recording_setup)
    monkeypatch.setattr(train, "_to_host", lambda metrics: events.append("read") or real_to_host(metrics))
    config = load_config(None, [*TINY, f"data.prepared={prepared}", "train.steps=6", "train.eval_every=0",
                                "checkpoint.every_steps=100", "mesh.data=-1"])
    # Any implicit device-to-host read in the loop (float() of a device value, as a learning rate computed
    # on device would be) raises here; the metrics are fetched explicitly, one step late.
    with jax.transfer_guard_device_to_host("disallow"):
        train.pretrain(config, tmp_path / "run", log=lambda _: None, progress=False)
    reads = [i for i, event in enumerate(events) if event == "read"]
    dispatches = [i for i, event in enumerate(events) if event == "dispatch"]
    assert len(dispatches) == len(reads) == 6
    for k in range(5):  # the read of step k + 1's metrics comes after the dispatch of step k + 2
        assert reads[k] > dispatches[k + 1], events
    records = read_metrics(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert all(r["learning_rate"] >= 0 and r["read_ms_per_step"] > 0 for r in records), records


def test_reader_threads_hand_out_the_same_batches_and_resume_exactly(prepared):
    unthreaded = PretrainingData(prepared, 16, seed=0)
    threaded = PretrainingData(prepared, 16, seed=0, read_threads=2)
    for _ in range(5):
        np.testing.assert_array_equal(next(threaded)["input_ids"], next(unthreaded)["input_ids"])
    state = json.loads(threaded.saved_state().get_state())  # with batches read ahead on the threads
    want = [next(unthreaded)["input_ids"] for _ in range(3)]
    resumed = PretrainingData(prepared, 16, seed=0, read_threads=2)
    resumed.iterator.set_state(state)
    for expected in want:
        np.testing.assert_array_equal(next(resumed)["input_ids"], expected)


def test_read_threads_default_by_platform():
    config = load_config(None, TINY)
    assert train.read_threads(config, "cpu") == 0 and train.read_threads(config, "tpu") == train.ACCELERATOR_READ_THREADS
    assert train.read_threads(load_config(None, [*TINY, "data.read_threads=3"]), "cpu") == 3
