"""Freed heap memory handed back to the operating system (glibc's `malloc_trim`).

Python's own allocator serves objects up to 512 bytes; bigger ones (records' values, encoded
states, the tables of large dicts and lists) come from glibc's malloc. What a worker frees
there goes back to the system only from the top of glibc's heap: a worker that had loaded
200,000 live and 1,000,000 ended auctions kept 212 MiB of free but resident pages in the middle
of it (`malloc_trim(0)` called from outside, once its load was done: 1,476 MiB before, 1,264
after).

A trim is not free: glibc holds the heap's lock while it walks every free chunk, so the event
loop's next allocation over 512 bytes waits for it (7 ms for 18,000 free chunks with nothing
new to release; 14.5 ms on average and at most 100 ms in the full-size bench/scale.py run). So
the worker trims only when its resident memory has grown by `GROWTH` since the last trim: a
worker whose memory holds steady does not trim, one that keeps reusing the pages a trim gave
back (a loading one) trims each time it has regrown by `GROWTH`.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

from prometheus_client import Histogram

GROWTH = 64 * 2**20
TRIM_SECONDS = Histogram(
    "auctions_timer_memory_trim_seconds",
    "How long handing freed heap memory back to the system took (malloc_trim)",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        function = ctypes.CDLL(None).malloc_trim  # the C library the interpreter runs on
    except (OSError, AttributeError):  # musl has no malloc_trim: nothing to hand back this way
        return None
    function.argtypes, function.restype = [ctypes.c_size_t], ctypes.c_int
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


def resident_bytes() -> int:
    """This process's resident memory (0 where /proc does not tell: then it never trims)."""
    try:
        return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


class Trimmer:
    """Trims when resident memory has grown by `growth` bytes since the last trim."""

    def __init__(
        self,
        growth: int = GROWTH,
        resident: Callable[[], int] = resident_bytes,
        release: Callable[[], bool] = trim,
    ) -> None:
        self.growth = growth
        self.resident = resident
        self.release = release
        self.base = 0  # resident bytes after the last trim

    def due(self) -> bool:
        resident = self.resident()
        return resident > 0 and resident >= self.base + self.growth

    def run_once(self) -> None:
        """Trim; the worker calls it in the default executor's thread, so what waits for it is
        the allocations of other threads over 512 bytes, not everything holding the GIL."""
        self.release()
        self.base = self.resident()
