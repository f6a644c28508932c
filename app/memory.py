"""Freed heap memory handed back to the operating system (glibc's `malloc_trim`).

Python's own allocator serves objects up to 512 bytes; bigger ones (records' values, encoded
states, the tables of large dicts and lists) come from glibc's malloc. What a worker frees
there goes back to the system only from the top of glibc's heap: a worker that has completed a
million auctions kept 212 MiB of free but resident pages in the middle of it (bench/scale.py at
full size, measured with `malloc_trim(0)` called from outside). `trim` releases them; on a C
library without it (musl, macOS) it does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import time
from collections.abc import Callable

from prometheus_client import Histogram

TRIM_SECONDS = Histogram(
    "auctions_timer_memory_trim_seconds",
    "How long handing freed heap memory back to the system took (malloc_trim)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
)


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        function: Callable[[int], int] = ctypes.CDLL(ctypes.util.find_library("c")).malloc_trim
    except (OSError, AttributeError):  # no C library found, or one without malloc_trim
        return None
    return function


_TRIM = _malloc_trim()


def trim() -> bool:
    """Hand every free page of the C heap back to the system; True if this C library can."""
    if _TRIM is None:
        return False
    started = time.perf_counter()
    _TRIM(0)  # ctypes releases the GIL meanwhile
    TRIM_SECONDS.observe(time.perf_counter() - started)
    return True
