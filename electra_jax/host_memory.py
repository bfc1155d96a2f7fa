"""Keep freed host memory inside the process, so XLA's CPU buffers are not mapped afresh every step.

XLA's CPU runtime allocates each execution's temporary buffer (1.5 GB for an ELECTRA-small step at
batch 32) with malloc from a worker thread. glibc serves a block that large from a fresh mmap, and
frees it with munmap, so every step page-faults the whole buffer in again: 411,000 faults and 0.66 s
of system time in a 1.5 s step on this project's 2-core machine. One arena that grows with brk, no
mmap and no trimming keep the block in the process, and the next step reuses it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

# mallopt parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_MAX = -4
M_ARENA_MAX = -8

_applied = False


def keep_freed_memory() -> bool:
    """Tune glibc malloc as above; True where it applied. Call it before JAX starts its threads (a thread
    that has already made its own arena keeps it). Elsewhere (macOS, musl) it does nothing."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        gnu_get_libc_version = libc.gnu_get_libc_version  # glibc only
    except (OSError, AttributeError):
        return False
    del gnu_get_libc_version
    settings = [(M_ARENA_MAX, 1), (M_MMAP_MAX, 0), (M_TRIM_THRESHOLD, -1)]  # -1: never trim
    _applied = all(libc.mallopt(parameter, value) == 1 for parameter, value in settings)
    return _applied
