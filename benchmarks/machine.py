"""The machine a benchmark ran on, printed next to its figures: figures from different CPUs do not compare
(PyTorch's oneDNN kernels are much stronger on AVX-512 + AMX Xeons than on an EPYC, for one)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu() -> str:
    """'<model>, N cores, flags ...' from /proc/cpuinfo (the platform's processor name elsewhere)."""
    info = Path("/proc/cpuinfo")
    model, flags = platform.processor() or platform.machine(), set()
    if info.is_file():
        for line in info.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    present = [flag for flag in FLAGS if flag in flags]
    return f"{model}, {cores} cores, {' '.join(present) if present else 'no AVX2/AVX-512/AMX'}"


def describe() -> str:
    """The CPU, and the accelerator when JAX sees one."""
    line = f"machine: {cpu()}"
    try:
        import jax
        devices = jax.devices()
        if devices[0].platform != "cpu":
            line += f"; {len(devices)} x {devices[0].device_kind} ({devices[0].platform})"
    except Exception:  # noqa: BLE001 - no JAX, or no usable backend: the CPU line still stands
        pass
    return line
