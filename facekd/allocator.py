"""Keep glibc from handing large tensor buffers back to the kernel after every use.

By default glibc serves allocations above a (dynamic, at most 32 MB) threshold with a fresh ``mmap`` and
returns them with ``munmap`` when freed.  A CPU forward pass of the 112 px face teacher at batch 64 makes
activations of about 50 MB, so every layer of every batch maps new pages and the kernel zeroes them on
first touch: on a 2-core machine more time went to these page faults than to the convolutions.  Raising
the mmap and trim thresholds keeps freed buffers in the heap for the next batch.

:func:`tune_allocator` is called when ``facekd`` is imported.  It is a no-op off glibc, and
``FACEKD_MALLOC_TUNING=0`` turns it off.  ``python benchmarks/bench_teacher.py`` measures the effect.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

__all__ = ["tune_allocator", "M_TRIM_THRESHOLD", "M_MMAP_THRESHOLD", "THRESHOLD_BYTES"]

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameter numbers (malloc.h)
THRESHOLD_BYTES = 1 << 30                     # 1 GiB: larger than any activation buffer of these networks


def tune_allocator(threshold: int = THRESHOLD_BYTES) -> bool:
    """Raise glibc's mmap and trim thresholds to ``threshold`` bytes; returns whether both were applied."""
    if os.environ.get("FACEKD_MALLOC_TUNING", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, int(threshold))) and bool(mallopt(M_TRIM_THRESHOLD, int(threshold)))
