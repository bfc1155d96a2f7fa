"""`electra-jax bench`: a config's train step on the devices at hand, with synthetic batches.

Reports, for each phase of a length curriculum at its shape, compile time, step time (median over timed
steps), the host's time per step to read and send the batch (from `data.prepared` when it is given, read as
the loop reads it; else the transfer of a synthetic batch), tokens/s, model FLOP utilisation (the step's
model FLOPs per second over the devices' peak) and peak memory. The peak comes from a table of dense
matmul peaks per JAX device (TPU v2/v3: one core; v4 and later: one chip); a CPU's peak is measured in
the same run (best fp32 matmul of 2048 x 2048), as no table can know it.
"""
from __future__ import annotations

import dataclasses
import functools
import resource
import statistics
import time

import numpy as np

from electra_jax.config import Config
from electra_jax.data.loader import FIELDS
from electra_jax.families import family_of

# Dense matmul peak per JAX device, FLOP/s: (bf16, f32). TPUs run f32 matmuls as bf16 passes at their
# default precision; GPUs run them as TF32.
PEAKS = {
    "TPU v2": (22.5e12, 22.5e12), "TPU v3": (61.5e12, 61.5e12), "TPU v4": (275e12, 275e12),
    "TPU v5 lite": (197e12, 197e12), "TPU v5e": (197e12, 197e12), "TPU v5p": (459e12, 459e12),
    "TPU v6 lite": (918e12, 918e12), "A100": (312e12, 156e12), "H100": (989e12, 494.5e12),
    "H200": (989e12, 494.5e12),
}


def table_peak(device_kind: str, dtype: str) -> float | None:
    """The table's entry whose name the device kind contains (longest match), for the compute dtype."""
    matches = [name for name in PEAKS if name.lower() in device_kind.lower()]
    if not matches:
        return None
    bf16, f32 = PEAKS[max(matches, key=len)]
    return bf16 if dtype == "bfloat16" else f32


@functools.cache  # measured once per process: every phase of a bench is read against the same peak
def measured_matmul_peak(size: int = 2048, repeats: int = 10) -> float:
    """Best fp32 matmul FLOP/s of this host through XLA (all its threads: one CPU device's share is this
    divided by the number of devices)."""
    import jax
    import jax.numpy as jnp
    x = jnp.asarray(np.random.default_rng(0).standard_normal((size, size)), jnp.float32)
    matmul = jax.jit(lambda a, b: a @ b)
    matmul(x, x).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        matmul(x, x).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * size ** 3 / best


def synthetic_batch(config: Config, vocab: int, seed: int = 0) -> dict[str, np.ndarray]:
    """[CLS] A [SEP] B [SEP] rows of random ordinary tokens (ids above the five specials)."""
    rng = np.random.default_rng(seed)
    batch, seq = config.train.batch_size, config.data.seq_len
    ids = rng.integers(5, vocab, size=(batch, seq)).astype(np.int32)
    ids[:, 0], ids[:, seq // 2], ids[:, -1] = 2, 3, 3
    segments = np.zeros_like(ids)
    segments[:, seq // 2 + 1:] = 1
    arrays = {"input_ids": ids, "segment_ids": segments}
    if "sop_label" in FIELDS[family_of(config.model).data_format]:
        arrays["sop_label"] = rng.integers(0, 2, batch).astype(np.int32)
    return arrays


def bench(config: Config, steps: int = 10, warmup: int = 2, log=print) -> dict:
    import jax

    from electra_jax.validation import validate
    from electra_jax.data.text_tokenizer import SpecialIds
    from electra_jax.mesh import make_mesh
    from electra_jax.train import setup_training

    family = family_of(config.model)
    reader, specials = None, SpecialIds(pad=0, unk=1, cls=2, sep=3, mask=4)
    vocab = config.model.vocab_size or config.data.vocab_size
    if config.data.prepared:  # real batches from the prepared folder, read as the loop reads them
        from electra_jax.data.loader import PretrainingData
        from electra_jax.data.prepare import read_metadata
        from electra_jax.mesh import platform_of
        from electra_jax.run_dir import special_ids
        from electra_jax.train import read_threads
        metadata = read_metadata(config.data.prepared)
        vocab, specials = config.model.vocab_size or metadata["tokenizer"]["vocab_size"], special_ids(metadata)
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, vocab_size=vocab))
    validate(config, jax.device_count())
    devices = jax.devices()
    word_starts = np.random.default_rng(0).random(vocab) < 0.7 if family.needs_word_starts(config) else None
    training = setup_training(config, make_mesh(config), specials, word_starts)
    if config.data.prepared:
        reader = PretrainingData(config.data.prepared, config.train.batch_size, config.data.seed,
                                 read_threads=read_threads(config, platform_of(training.batch_sharding.mesh)))
    synthetic = synthetic_batch(config, vocab)

    def next_batch() -> dict:
        """A global batch from the host, as the loop builds one (a synthetic batch: only the transfer)."""
        host = next(reader) if reader is not None else synthetic
        return {name: jax.make_array_from_process_local_data(training.batch_sharding, array)
                for name, array in host.items()}

    batch = next_batch()
    state = training.init()
    start = time.perf_counter()
    step = training.step_fn.lower(state, batch).compile()
    compile_seconds = time.perf_counter() - start
    times, host_times = [], []
    for i in range(warmup + steps):
        start = time.perf_counter()
        batch = next_batch()
        host_seconds = time.perf_counter() - start
        state, metrics = step(state, batch)
        metrics["loss"].block_until_ready()
        values = {name: float(value) for name, value in jax.device_get(metrics).items()}  # as the loop logs
        if i >= warmup:
            times.append(time.perf_counter() - start - host_seconds)
            host_times.append(host_seconds)
    step_seconds = statistics.median(times)
    tokens_per_second = config.train.batch_size * config.data.seq_len / step_seconds
    achieved = family.flops_per_token(config) * tokens_per_second
    kind, dtype = devices[0].device_kind, training.config.model.dtype
    if devices[0].platform == "cpu":
        peak, source = measured_matmul_peak(), "fp32 matmul measured in this run"
    else:
        per_device = table_peak(kind, dtype)
        peak = per_device * len(devices) if per_device else None
        source = f"table: {kind} {dtype}" if per_device else f"no table entry for {kind}"
    result = {"devices": len(devices), "device_kind": kind, "dtype": dtype, "remat": config.model.remat,
              "attention": config.model.attention,
              "batch": config.train.batch_size, "seq_len": config.data.seq_len, "compile_s": compile_seconds,
              "step_s": step_seconds, "steps_timed": steps, "tokens_per_s": tokens_per_second,
              "model_tflops_per_s": achieved / 1e12, "peak_tflops_per_s": peak / 1e12 if peak else None,
              "peak_source": source, "mfu": achieved / peak if peak else None,
              "loss": values["loss"], "peak_memory_gib": _peak_memory_gib(devices),
              "host_s": statistics.median(host_times), "host_source": "prepared data" if reader else "synthetic"}
    log(_report(result))
    return result


def bench_phases(config: Config, steps: int = 10, warmup: int = 2, log=print) -> list[dict]:
    """`bench` of each phase of a length curriculum at its own length and batch (a config without
    `train.phases`: its one shape), each with the phase's steps, tokens and time at the measured step."""
    from electra_jax.phases import run_phases
    phases = run_phases(config)
    results = []
    for phase in phases:
        if phase.named:
            log(phase.describe(len(phases)))
        result = bench(phase.config, steps=steps, warmup=warmup, log=log)
        result.update(phase=phase.index, phase_steps=phase.steps,
                      phase_tokens=phase.steps * phase.batch_size * phase.seq_len,
                      phase_hours=phase.steps * result["step_s"] / 3600)
        if phase.named:
            log(f"phase {phase.index + 1} at this step time: {phase.steps:,} steps x {result['step_s'] * 1000:.1f} ms "
                f"= {result['phase_hours']:,.1f} h\n")
        results.append(result)
    if len(phases) > 1:
        log(f"all phases: {sum(r['phase_tokens'] for r in results):,} tokens in "
            f"{sum(r['phase_hours'] for r in results):,.1f} h at these step times")
    return results


def _peak_memory_gib(devices) -> float:
    """Largest per-device peak where the runtime reports it (GPU, TPU); else this process's peak RSS."""
    stats = [d.memory_stats() or {} for d in devices if d.platform != "cpu"]
    peaks = [s.get("peak_bytes_in_use", 0) for s in stats]
    if peaks and max(peaks):
        return max(peaks) / 2 ** 30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20  # KiB on Linux


def _report(r: dict) -> str:
    mfu = f"{100 * r['mfu']:.1f}% of {r['peak_tflops_per_s']:.2f} TFLOP/s ({r['peak_source']})" if r["mfu"] else \
        f"unknown ({r['peak_source']})"
    return "\n".join([
        f"devices:      {r['devices']} x {r['device_kind']} ({r['dtype']} compute, remat {r['remat']}, "
        f"attention {r['attention']})",
        f"batch:        {r['batch']} x {r['seq_len']} tokens",
        f"compile:      {r['compile_s']:.1f} s",
        f"step:         {r['step_s'] * 1000:.1f} ms (median of {r['steps_timed']})",
        f"host:         {r['host_s'] * 1000:.1f} ms per step reading and sending the batch "
        f"({'from data.prepared' if r['host_source'] == 'prepared data' else 'a synthetic batch: the transfer only'}"
        f"), which the loop overlaps with the step",
        f"throughput:   {r['tokens_per_s']:,.0f} tokens/s, {r['model_tflops_per_s']:.3f} model TFLOP/s",
        f"MFU:          {mfu}",
        f"peak memory:  {r['peak_memory_gib']:.2f} GiB", ""])
