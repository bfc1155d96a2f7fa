"""Prepared ArrayRecord shards -> this host's slice of each global batch, through Grain.

A seeded global shuffle (a new permutation each epoch) cut into global batches; each host takes its
contiguous block of rows of every global batch (host i: rows i*b..(i+1)*b-1, b = batch / hosts), so the
global batch - rows in order - is the same whatever the number of hosts, and the slices are disjoint and
cover the data. The iterator's state is a
batch counter saved in the Orbax checkpoint beside the model, with a spec of what it counts (seed, batch
size, hosts, data) so a resume that would silently read other batches is refused instead.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import grain
import numpy as np

from electra_jax.data.packing import decode_record
from electra_jax.data.prepare import read_metadata

FIELDS = {"electra": ("input_ids", "segment_ids"), "albert": ("input_ids", "segment_ids", "sop_label")}


def _records(folder: Path, metadata: dict, shards: list[dict]):
    """(random-access source over `shards`, decode: record -> the format's padded fields)."""
    dtype, seq_len = np.dtype(metadata["record_dtype"]), metadata["seq_len"]
    pad, fields = metadata["tokenizer"]["special_ids"]["pad"], FIELDS[metadata["format"]]
    source = grain.sources.ArrayRecordDataSource([str(folder / shard["file"]) for shard in shards])

    def decode(record: bytes) -> dict[str, np.ndarray]:
        example = decode_record(record, dtype, seq_len, pad)
        return {name: example[name] for name in fields}

    return source, decode


class PretrainingData:
    def __init__(self, folder: str | Path, global_batch: int, seed: int, process_index: int = 0,
                 process_count: int = 1, read_threads: int = 0):
        folder = Path(folder)
        self.metadata = metadata = read_metadata(folder)
        self.local_batch = global_batch // process_count
        source, decode = _records(folder, metadata, metadata["shards"])
        per_host = len(source) // process_count
        if per_host < self.local_batch:
            raise ValueError(f"data: {len(source)} prepared examples give {per_host} per host, fewer than the "
                             f"{self.local_batch} of one batch; give more text or a smaller train.batch_size")
        dataset = grain.MapDataset.source(source).seed(seed).shuffle()
        dataset = dataset[:len(source) // global_batch * global_batch]  # whole global batches only
        dataset = HostRows(dataset, global_batch, process_index, process_count)
        dataset = dataset.repeat(None).map(decode).batch(self.local_batch, drop_remainder=True)
        # read_threads=0: each batch is read when asked for, between dispatching one step and the next, while
        # the device computes. Otherwise that many threads read the next batches ahead (two per thread held);
        # Grain's saved state is still the position of the last batch handed out, so resume stays exact.
        options = grain.ReadOptions(num_threads=read_threads, prefetch_buffer_size=2 * read_threads)
        self.iterator = iter(dataset.to_iter_dataset(options))
        # The saved state counts batches: it means the same only for the same data, order and batch.
        # The metadata names the tokenizer, the options (seed included), the sources and every count.
        digest = hashlib.sha256(json.dumps(metadata, sort_keys=True).encode()).hexdigest()[:16]
        self.spec = {"seed": seed, "global_batch": global_batch, "process_count": process_count, "data": digest,
                     "order": "host-rows"}

    def saved_state(self) -> "FrozenState":
        return FrozenState(self.iterator.get_state())

    def __next__(self) -> dict[str, np.ndarray]:
        return next(self.iterator)

    def __iter__(self):
        return self


class HostRows(grain.MapDataset):
    """One host's rows of every global batch of `parent` (whose length is a multiple of the global batch).
    Indices past the end run into the next epoch, as Grain's own transforms do."""

    def __init__(self, parent: grain.MapDataset, global_batch: int, process_index: int, process_count: int):
        super().__init__(parent)
        self._global, self._local = global_batch, global_batch // process_count
        self._offset = process_index * self._local

    def __len__(self) -> int:
        return len(self._parent) // self._global * self._local

    def __str__(self) -> str:
        return f"HostRows(rows {self._offset}..{self._offset + self._local - 1} of each {self._global})"

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        epoch, index = divmod(index, len(self))
        batch, row = divmod(index, self._local)
        return self._parent[epoch * len(self._parent) + batch * self._global + self._offset + row]


class FrozenState:
    """The iterator's state when the save was asked for, in the form Grain's checkpoint handler writes:
    an asynchronous save must not read the live iterator after the loop has moved it on."""

    def __init__(self, state: dict):
        self._state = json.dumps(state, indent=4).encode()

    def get_state(self) -> bytes:
        return self._state


def batch_hash(batch: dict[str, np.ndarray]) -> str:
    """A short digest of this host's batch, logged per step so runs can be compared batch by batch."""
    digest = hashlib.blake2b(digest_size=8)
    for name in sorted(batch):
        digest.update(np.ascontiguousarray(batch[name]).tobytes())
    return digest.hexdigest()


def held_out_batches(folder: str | Path, split: str, global_batch: int, num_batches: int, process_index: int = 0,
                     process_count: int = 1) -> list[dict[str, np.ndarray]]:
    """The fixed batches of held-out evaluation: this host's rows of the first `num_batches` global batches of
    one fixed shuffle of the `split` records ("eval": the held-out shards of `prepare --eval-fraction`;
    "train": a whole separate prepared folder). Whole batches only, so fewer when the split is smaller."""
    metadata = read_metadata(folder)
    source, decode = _records(Path(folder), metadata, metadata["eval"]["shards"] if split == "eval" else
                              metadata["shards"])
    count = min(num_batches, len(source) // global_batch)
    # A fixed seed, not data.seed: runs with other seeds evaluate on the same examples.
    dataset = grain.MapDataset.source(source).seed(0).shuffle()[:count * global_batch]
    dataset = HostRows(dataset, global_batch, process_index, process_count)
    return list(dataset.map(decode).batch(global_batch // process_count, drop_remainder=True))
