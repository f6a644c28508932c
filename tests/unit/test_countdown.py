"""The client's countdown algorithm on simulated clocks and networks."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

import pytest

from app.client.countdown import Corrected, Countdown, DriftWarning, Ended, Extended, Rehydrate, Sync

ENDS_AT = 2_000_000_000_000


class ManualClock:
    def __init__(self, start: float) -> None:
        self.t = start

    def __call__(self) -> float:
        return self.t


def state(version: int = 1, ends_at: int = ENDS_AT, status: str = "running") -> dict[str, Any]:
    return {"auction_id": "a", "version": version, "status": status, "ends_at_ms": ends_at}


def tick(seq: int, server_ms: float, **fields: Any) -> dict[str, Any]:
    return {"type": "tick", "seq": seq, "server_time_ms": server_ms, **state(**fields)}


def primed(rtt: float = 10.0) -> tuple[Countdown, ManualClock]:
    """A countdown whose clock estimate is exact: offset = 1e12 (server = monotonic + 1e12)."""
    clock = ManualClock(50_000.0)
    cd = Countdown(clock)
    cd.sample(clock.t - rtt, clock.t - rtt / 2 + 1e12, clock.t)
    cd.on_message({"type": "snapshot", "seq": 0, "server_time_ms": clock.t + 1e12 - 5, "state": state()}, clock.t)
    return cd, clock


@pytest.mark.parametrize(
    ("drift", "expected"),
    [
        (0, []),
        (60, [Corrected]),
        (-60, [Corrected]),
        (150, [Corrected]),
        (-240, [Corrected]),
        (300, [Corrected, DriftWarning]),
        (-400, [Corrected, DriftWarning]),
        (600, [Corrected, DriftWarning, Sync]),
        (-900, [Corrected, DriftWarning, Sync]),
    ],
)
def test_each_threshold_triggers_exactly_its_action(drift: float, expected: list[type]) -> None:
    cd, clock = primed()
    clock.t += 1_000
    server_now = clock.t + 1e12
    # Our clock reads server_now. A tick that makes us `drift` ahead: stamped so that
    # server_now sits `drift` past the top of [S, S + 100]; behind: S is later than our clock.
    stamped = server_now - 100 - drift if drift > 0 else server_now - drift
    out = cd.on_message(tick(1, stamped), clock.t)
    assert [type(o) for o in out] == expected
    if out:
        assert out[0].drift_ms == pytest.approx(drift)  # type: ignore[union-attr]
        assert out[0].how == ("slew" if abs(drift) < 100 else "snap")  # type: ignore[union-attr]


def test_small_drift_is_slewed_smoothly_and_large_is_snapped() -> None:
    cd, clock = primed()
    before = cd.remaining_ms()
    assert before is not None
    cd.on_message(tick(1, clock.t + 1e12 + 80), clock.t)  # we are 80 ms behind
    assert cd.remaining_ms() == before  # nothing jumps
    clock.t += 400  # 400 ms later, 40 ms of it slewed
    assert cd.remaining_ms() == before - 400 - 40
    clock.t += 1_000
    assert cd.remaining_ms() == before - 1_400 - 80  # fully corrected, never overshooting


def test_newer_version_wins_at_once_older_is_ignored() -> None:
    cd, clock = primed()
    out = cd.on_message(tick(1, clock.t + 1e12, version=2, ends_at=ENDS_AT + 30_000), clock.t)
    assert out == [Extended(ENDS_AT, ENDS_AT + 30_000, 2)]
    assert cd.remaining_ms() == round(ENDS_AT + 30_000 - (clock.t + 1e12))
    assert cd.on_message(tick(2, clock.t + 1e12, version=1, ends_at=ENDS_AT), clock.t) == []
    assert cd.state is not None and (cd.state["version"], cd.state["ends_at_ms"]) == (2, ENDS_AT + 30_000)
    out = cd.on_message(tick(3, clock.t + 1e12, version=3, ends_at=ENDS_AT + 30_000, status="ended"), clock.t)
    assert out == [Ended("ended", 3)]
    assert cd.remaining_ms() == 0


def test_a_sequence_gap_asks_for_a_rehydrate() -> None:
    cd, clock = primed()
    assert cd.on_message(tick(1, clock.t + 1e12), clock.t) == []
    out = cd.on_message(tick(3, clock.t + 1e12), clock.t)
    assert out == [Rehydrate("seq 1 -> 3")]
    assert cd.seq == 3


@dataclass(order=True)
class SimEvent:
    at: float
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


@pytest.mark.parametrize("skew_ms", [-600_000, -1, 0, 600_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shown_remaining_stays_within_50_ms_of_truth(skew_ms: int, seed: int) -> None:
    """Client wall clock skewed by up to ±10 min (never consulted), monotonic clock running
    30 ppm fast, one-way latencies jittered 0-200 ms; pings every 2 s, ticks every second."""
    rng = random.Random(seed)
    server_start = 1_800_000_000_000.0
    ends_at = server_start + 600_000
    mono_origin = 12_345.0

    def mono(true_t: float) -> float:
        return mono_origin + true_t * (1 + 30e-6)

    now = {"t": 0.0}
    cd = Countdown(lambda: mono(now["t"]))
    device_wall_clock = server_start + skew_ms  # what a naive client would use; we never do
    assert device_wall_clock != server_start or skew_ms == 0
    events: list[SimEvent] = []

    def latency() -> float:
        return rng.uniform(0, 200)

    heapq.heappush(events, SimEvent(0.0, "ping"))
    heapq.heappush(events, SimEvent(rng.uniform(0, 1000), "tick"))
    for i in range(400):
        heapq.heappush(events, SimEvent(5_000 + i * 137.0 + rng.uniform(0, 100), "probe"))
    errors: list[float] = []
    seq = 0
    while events:
        event = heapq.heappop(events)
        now["t"] = event.at
        if event.kind == "ping":
            sent = mono(event.at)
            served_at = event.at + latency()
            heapq.heappush(events, SimEvent(served_at + latency(), "pong", (sent, server_start + served_at)))
            if event.at < 70_000:
                heapq.heappush(events, SimEvent(event.at + 2_000, "ping"))
        elif event.kind == "pong":
            sent, server_ms = event.data
            cd.sample(sent, server_ms, mono(event.at))
            if cd.state is None:
                cd.apply_state(state(ends_at=int(ends_at)))
        elif event.kind == "tick":
            seq += 1
            msg = tick(seq, server_start + event.at, ends_at=int(ends_at))
            heapq.heappush(events, SimEvent(event.at + latency(), "deliver", msg))
            if event.at < 70_000:
                heapq.heappush(events, SimEvent(event.at + 1_000, "tick"))
        elif event.kind == "deliver":
            if cd.offset is not None:
                out = cd.on_message(event.data, mono(event.at))
                assert not [o for o in out if isinstance(o, (DriftWarning, Sync))], out
        elif event.kind == "probe":
            shown = cd.remaining_ms()
            assert shown is not None
            errors.append(abs(shown - (ends_at - (server_start + event.at))))
    errors.sort()
    p99 = errors[int(0.99 * (len(errors) - 1))]
    assert p99 <= 50, f"p99 error {p99} ms"
