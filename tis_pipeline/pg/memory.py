"""Keep freed heap memory in the process instead of handing it back to the kernel after every day of bars.

The bulk assets allocate and free arrays of a few megabytes per UTC day (columns of 72,000 bars, COPY
payloads). glibc serves blocks that large with ``mmap`` and unmaps them on ``free``, and trims the top of the
heap, so the next day's arrays fault every page in again: measured on the ingest of 1M bars in day pieces,
0.7-1.2 s of system time per run, against 0.05-0.2 s with the settings below (bench/RESULTS.md, "Ingest").
With them, blocks up to 32 MB come from the heap and up to 256 MB of free heap is kept, so
a day's arrays reuse the previous day's pages. Peak memory is unchanged; memory is returned at exit.

Between the steps of a run that executes in one process (``tis backfill`` without a daemon, ``tis demo``),
the heap a step freed stays with the process: in the arenas of the threads that read and built (the next
step's threads allocate elsewhere) and in holes between blocks still in use. ``release_freed_memory`` hands
the free pages back (glibc's ``malloc_trim(0)``); the daily job runs it after every step (ops/jobs.py).
Measured on the 2,000-symbol day: the process between the ingest and its checks 1,221 -> 846 MiB, the run's
peak 1,947 -> 1,827 MiB (bench/RESULTS.md).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024
TRIM_THRESHOLD_BYTES = 256 * 1024 * 1024


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    """The C library when it is glibc (it has ``mallopt`` and ``malloc_trim``), else None (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.mallopt, libc.malloc_trim  # noqa: B018 - AttributeError where the C library has neither
    except (OSError, AttributeError):
        return None
    return libc


@functools.cache
def retain_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds once per process; False where the C library is not glibc."""
    libc = _glibc()
    if libc is None:
        return False
    mallopt = libc.mallopt
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES)
    )


def release_freed_memory() -> bool:
    """Hand the heap's free pages back to the kernel (``malloc_trim(0)``, every arena); True when glibc
    released any, False when there was none to release or the C library is not glibc."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
