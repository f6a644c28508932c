"""The client's countdown algorithm on simulated clocks and networks."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest

from app.client import client as timer_client
from app.client.countdown import Corrected, Countdown, DriftWarning, Ended, Extended, Rehydrate, ServerClock, Sync
from tests.support.clocksim import SERVER_START, WallClockServerClock, device_wall_clock, simulate

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
    cd = Countdown(ServerClock(clock))
    cd.clock.sample(clock.t - rtt, clock.t - rtt / 2 + 1e12, clock.t)
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
    assert out == [Extended("a", ENDS_AT, ENDS_AT + 30_000, 2)]
    assert cd.remaining_ms() == round(ENDS_AT + 30_000 - (clock.t + 1e12))
    assert cd.on_message(tick(2, clock.t + 1e12, version=1, ends_at=ENDS_AT), clock.t) == []
    assert cd.state is not None and (cd.state["version"], cd.state["ends_at_ms"]) == (2, ENDS_AT + 30_000)
    out = cd.on_message(tick(3, clock.t + 1e12, version=3, ends_at=ENDS_AT + 30_000, status="ended"), clock.t)
    assert out == [Ended("a", "ended", 3)]
    assert cd.remaining_ms() == 0


def test_a_sequence_gap_asks_for_a_rehydrate() -> None:
    cd, clock = primed()
    assert cd.on_message(tick(1, clock.t + 1e12), clock.t) == []
    out = cd.on_message(tick(3, clock.t + 1e12), clock.t)
    assert out == [Rehydrate("seq 1 -> 3")]
    assert cd.seq == 3


def p99(errors: list[float]) -> float:
    ordered = sorted(errors)
    return ordered[int(0.99 * (len(ordered) - 1))]


@pytest.mark.parametrize("skew_ms", [-600_000, -1, 0, 600_000])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_shown_remaining_stays_within_50_ms_of_truth(skew_ms: int, seed: int) -> None:
    """Device wall clock off by up to ±10 min, monotonic clock running 30 ppm fast, one-way
    latencies jittered 0-200 ms; pings every 2 s, ticks every second."""
    result = simulate(seed, skew_ms=skew_ms)
    assert result.warnings == 0 and result.syncs == 0  # jitter alone never looks like drift
    assert p99(result.errors) <= 50, f"p99 error {p99(result.errors)} ms"


def test_the_simulated_device_clock_is_really_off() -> None:
    """Every wall clock the client code could read answers the skewed time, even through the
    client module's own `time` import."""
    skewed = SERVER_START + 600_000
    with device_wall_clock(lambda: skewed):
        assert time.time() * 1000 == vars(timer_client)["time"].time() * 1000 == skewed
        assert time.time_ns() == time.clock_gettime_ns(time.CLOCK_REALTIME) == skewed * 1_000_000
        assert dt.datetime.now(dt.UTC).timestamp() * 1000 == skewed
        assert dt.datetime.now().timestamp() * 1000 == skewed
        assert time.gmtime().tm_year == time.gmtime(skewed / 1000).tm_year
    assert abs(time.time() * 1000 - skewed) > 600_000  # and only while inside


@pytest.mark.parametrize("skew_ms", [-600_000, 600_000])
def test_a_countdown_reading_the_device_clock_fails_the_simulation(skew_ms: int) -> None:
    assert p99(simulate(1, server_clock=WallClockServerClock).errors) <= 50  # right when the clock is right
    assert p99(simulate(1, skew_ms=skew_ms, server_clock=WallClockServerClock).errors) >= 599_000
