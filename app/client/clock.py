"""Estimating the server's clock from round trips, NTP style, on a monotonic clock.

A request sent at monotonic `sent` and answered at `received` with the server's time `server`
proves the offset (server time minus monotonic time) lies in [server - received, server - sent]:
an interval as wide as the round trip. A message stamped `server` and received at `received`
proves only the lower end. The estimate is the middle of what every recent sample allows
together (their intersection), which is never wider than the best single round trip; if the
samples disagree (a clock jumped), the minimum-RTT sample alone is used. The device's wall
clock is never read, so a wrong device clock does not matter.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW = 16


@dataclass
class ClockEstimator:
    window: int = WINDOW
    intervals: deque[tuple[float, float]] = field(default_factory=deque)  # (low, high) offsets
    lows: deque[float] = field(default_factory=deque)  # one-sided bounds from one-way messages

    def add(self, sent: float, server_ms: float, received: float) -> None:
        self.intervals.append((server_ms - max(received, sent), server_ms - sent))
        while len(self.intervals) > self.window:
            self.intervals.popleft()

    def add_lower_bound(self, server_ms: float, received: float) -> None:
        self.lows.append(server_ms - received)
        while len(self.lows) > self.window:
            self.lows.popleft()

    def shift(self, by_ms: float) -> None:
        """Move every sample: a later observation proved the model off by `by_ms`."""
        self.intervals = deque((low + by_ms, high + by_ms) for low, high in self.intervals)
        self.lows = deque(low + by_ms for low in self.lows)

    @property
    def ready(self) -> bool:
        return bool(self.intervals)

    @property
    def offset(self) -> float:
        low = max(max(lo for lo, _ in self.intervals), max(self.lows, default=float("-inf")))
        high = min(hi for _, hi in self.intervals)
        if low <= high:
            return (low + high) / 2
        best_low, best_high = min(self.intervals, key=lambda i: i[1] - i[0])
        return (best_low + best_high) / 2

    @property
    def worst_rtt(self) -> float:
        return max(high - low for low, high in self.intervals)
