"""The countdown's reconciliation, pure: messages and clock samples in, state and actions out.

Shown remaining = ends_at - (monotonic now + offset). The offset comes from round trips
(ClockEstimator); every tick checks it: a tick stamped S by the server, received at
monotonic r, proves the server's clock read between S and S + one-way latency at r.
How far our estimate falls outside that interval is the drift:

- under 100 ms: slewed away smoothly (at most 100 ms per second);
- 100 ms up to 250 ms: corrected at once;
- over 250 ms: corrected at once and a DriftWarning;
- over 500 ms: that, and a Sync (POST /timers/sync, then rehydrate).

A newer version wins at once; an older one is ignored; a gap in `seq` asks for a
rehydrate. One ServerClock serves every auction a client follows; each auction has its own
Countdown (state and seq). The browser pages (app/static/timer.js) implement the same rules.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.client.clock import ClockEstimator
from streams.state import LIVE

SLEW_BELOW_MS = 100
WARN_ABOVE_MS = 250
SYNC_ABOVE_MS = 500
SLEW_RATE = 0.1  # ms of correction per ms of time: 100 ms in a second
MIN_LATENCY_SLACK_MS = 100
UPDATES = frozenset({"tick", "registered", "started", "extended", "completed", "cancelled"})


@dataclass(frozen=True)
class Extended:
    auction_id: str
    previous_ends_at_ms: int
    ends_at_ms: int
    version: int


@dataclass(frozen=True)
class Ended:
    auction_id: str
    status: str
    version: int


@dataclass(frozen=True)
class DriftWarning:
    drift_ms: float


@dataclass(frozen=True)
class Corrected:
    drift_ms: float
    how: str  # "slew" or "snap"


@dataclass(frozen=True)
class Sync:
    """Ask the server: POST /timers/sync, then rehydrate."""

    drift_ms: float


@dataclass(frozen=True)
class Rehydrate:
    """Fetch GET /auctions/{id}/timer: a message was missed."""

    reason: str


Output = Extended | Ended | DriftWarning | Corrected | Sync | Rehydrate


@dataclass
class ServerClock:
    """The estimate of the server's clock: offset = server time - monotonic time."""

    now: Callable[[], float]  # monotonic milliseconds
    estimator: ClockEstimator = field(default_factory=ClockEstimator)
    offset: float | None = None  # what the display uses; slews toward the estimator's
    _slew_at: float = 0.0

    def sample(self, sent: float, server_ms: float, received: float) -> None:
        """A round trip (ping/pong, GET or sync): refine the estimate."""
        self.estimator.add(sent, server_ms, received)
        if self.offset is None or abs(self.estimator.offset - self._advance()) >= SLEW_BELOW_MS:
            self.offset = self.estimator.offset  # first sample, or too far to slew: snap

    def _advance(self) -> float:
        """Move the shown offset toward the estimate at the slew rate; returns it."""
        now = self.now()
        assert self.offset is not None
        if self.estimator.ready:
            gap = self.estimator.offset - self.offset
            step = SLEW_RATE * max(0.0, now - self._slew_at)
            self.offset += max(-step, min(step, gap))
        self._slew_at = now
        return self.offset

    def server_now(self) -> float | None:
        return None if self.offset is None else self.now() + self._advance()

    def _bounds(self, server_ms: float, received: float) -> tuple[float, float]:
        """The offsets a message stamped `server_ms`, received at `received`, allows: the server
        read at least `server_ms` then, and at most that plus a plausible one-way latency."""
        slack = max(MIN_LATENCY_SLACK_MS, self.estimator.worst_rtt)
        return server_ms - received, server_ms + slack - received

    def drift_against(self, server_ms: float, received: float) -> float:
        """How far the shown clock is outside what the message allows. Positive: ahead
        (showing too little time left); negative: behind. Needs a clock estimate (an offset
        is only ever set together with a first sample)."""
        low, high = self._bounds(server_ms, received)
        shown = self._advance()
        return shown - min(max(shown, low), high)

    def check(self, server_ms: float, received: float) -> list[Output]:
        """A message stamped `server_ms` arrived at `received`: correct the estimate if it disagrees."""
        if self.offset is None:
            return []  # no clock estimate yet: nothing to check against
        drift = self.drift_against(server_ms, received)
        self.estimator.add_lower_bound(server_ms, received)
        if drift == 0:
            return []
        # Move the estimate just inside the allowed interval (it may already be inside: the
        # shown offset is mid-slew), then slew or snap the display to it.
        low, high = self._bounds(server_ms, received)
        estimate = self.estimator.offset
        target = min(max(estimate, low), high)
        self.estimator.shift(target - estimate)
        size = abs(drift)
        if size < SLEW_BELOW_MS:
            return [Corrected(drift, "slew")]
        self.offset = target
        out: list[Output] = [Corrected(drift, "snap")]
        if size > WARN_ABOVE_MS:
            out.append(DriftWarning(drift))
        if size > SYNC_ABOVE_MS:
            out.append(Sync(drift))
        return out


@dataclass
class Countdown:
    """One auction: its newest state and its channel's seq, shown on the shared clock."""

    clock: ServerClock
    state: dict[str, Any] | None = None
    seq: int | None = None

    def remaining_ms(self) -> int | None:
        server_now = self.clock.server_now()
        if self.state is None or server_now is None:
            return None
        if self.state["status"] not in LIVE:
            return 0
        return max(0, round(int(self.state["ends_at_ms"]) - server_now))

    def apply_state(self, new: dict[str, Any]) -> list[Output]:
        """Newer version wins at once, older is ignored, equal refreshes the fields."""
        old = self.state
        if old is not None and new["version"] < old["version"]:
            return []
        self.state = {**(old or {}), **new}
        if old is None or new["version"] == old["version"]:
            return []
        out: list[Output] = []
        auction_id = str(self.state["auction_id"])
        if new["ends_at_ms"] > old["ends_at_ms"]:
            out.append(Extended(auction_id, old["ends_at_ms"], new["ends_at_ms"], new["version"]))
        if new["status"] not in LIVE and old["status"] in LIVE:
            out.append(Ended(auction_id, new["status"], new["version"]))
        return out

    def hydrate(self, body: dict[str, Any], sent: float, received: float) -> list[Output]:
        """A GET (or sync) answer: a clock sample and the state."""
        self.clock.sample(sent, body["server_time_ms"], received)
        return self.apply_state(body)

    def on_message(self, message: dict[str, Any], received: float) -> list[Output]:
        kind = message.get("type")
        if kind == "snapshot":
            self.seq = message["seq"]
            out = self.clock.check(message["server_time_ms"], received)
            if message.get("state"):
                out += self.apply_state(message["state"])
            return out
        if kind in UPDATES:
            out = []
            if self.seq is not None and message["seq"] != self.seq + 1:
                out.append(Rehydrate(f"seq {self.seq} -> {message['seq']}"))
            self.seq = message["seq"]
            out += self.apply_state({k: v for k, v in message.items() if k not in ("type", "seq")})
            out += self.clock.check(message["server_time_ms"], received)
            return out
        return []
