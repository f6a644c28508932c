"""The one wall clock of the service, in epoch milliseconds.

The fold never reads it (time comes from the log); the scheduler, metrics and the
gateway do, and take it as a parameter so tests can control it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
