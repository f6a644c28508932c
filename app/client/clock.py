"""Estimating the server's clock from round trips, NTP style, on a monotonic clock.

A sample from a request sent at monotonic `sent` and answered at `received` with the
server's time `server` says: server time = monotonic + (server - (sent + received) / 2),
give or take half the round trip. The sample with the smallest round trip in a sliding
window is the best; the wall clock of the device is never used, so a wrong device clock
does not matter.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

WINDOW = 16


@dataclass
class ClockEstimator:
    window: int = WINDOW
    samples: deque[tuple[float, float]] = field(default_factory=deque)  # (rtt, offset)

    def add(self, sent: float, server_ms: float, received: float) -> None:
        rtt = max(0.0, received - sent)
        self.samples.append((rtt, server_ms - (sent + received) / 2))
        while len(self.samples) > self.window:
            self.samples.popleft()

    def shift(self, by_ms: float) -> None:
        """Move every sample: a later observation proved the model off by `by_ms`."""
        self.samples = deque((rtt, offset + by_ms) for rtt, offset in self.samples)

    @property
    def ready(self) -> bool:
        return bool(self.samples)

    @property
    def offset(self) -> float:
        """Server time minus monotonic time, from the minimum-RTT sample."""
        return min(self.samples)[1]

    @property
    def best_rtt(self) -> float:
        return min(self.samples)[0]

    @property
    def worst_rtt(self) -> float:
        return max(rtt for rtt, _ in self.samples)
