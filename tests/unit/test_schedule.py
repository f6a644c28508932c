"""The scheduler's bookkeeping, on a simulated clock."""

from __future__ import annotations

from dataclasses import replace

from streams.fold import apply
from streams.schedule import REFIRE_MS, Schedule
from streams.state import TimerState
from tests.support.events import T0, envelope, started


def timer(auction_id: str, ends: int, starts: int = T0) -> TimerState:
    state, _ = apply(None, envelope(started(auction_id, starts, ends), time_ms=T0))
    assert state is not None
    return state


def test_deadline_fires_once_at_ends_at_then_refires_later() -> None:
    sched = Schedule(tick_interval_ms=60_000)
    sched.track(timer("a", T0 + 1_000), T0)
    assert sched.next_due_ms() == T0 + 1_000
    assert sched.pop_due(T0 + 999) == []
    fired = sched.pop_due(T0 + 1_000)
    assert [(d.kind, d.version) for d in fired] == [("expire", 1)]
    # Not applied yet: fired again after 100 ms, then 200, 400, ... up to REFIRE_MS apart.
    at = T0 + 1_000
    for wait in (100, 200, 400, 800, 1_600, 3_200, REFIRE_MS, REFIRE_MS):
        assert sched.pop_due(at + wait - 1) == []
        at += wait
        assert [d.kind for d in sched.pop_due(at)] == ["expire"]


def test_extension_replaces_the_deadline() -> None:
    sched = Schedule(tick_interval_ms=60_000)
    state = timer("a", T0 + 1_000)
    sched.track(state, T0)
    sched.track(replace(state, version=2, ends_at_ms=T0 + 3_000), T0 + 500)
    assert sched.pop_due(T0 + 2_000) == []  # the old deadline is stale
    assert [(d.kind, d.version) for d in sched.pop_due(T0 + 3_000)] == [("expire", 2)]


def test_older_version_never_replaces_newer() -> None:
    sched = Schedule(tick_interval_ms=60_000)
    state = timer("a", T0 + 1_000)
    newer = replace(state, version=3, ends_at_ms=T0 + 9_000)
    sched.track(newer, T0)
    sched.track(state, T0)
    assert sched.live["a"].version == 3


def test_the_same_version_again_is_scheduled_once() -> None:
    sched = Schedule(tick_interval_ms=60_000)
    state = timer("a", T0 + 1_000)
    sched.track(state, T0)
    sched.track(state, T0 + 10)  # a redelivered registration after a restart
    assert [d.kind for d in sched.pop_due(T0 + 1_000)] == ["expire"]


def test_ended_timer_leaves_the_schedule() -> None:
    sched = Schedule(tick_interval_ms=1_000)
    state = timer("a", T0 + 10_000)
    sched.track(state, T0)
    sched.track(replace(state, version=2, status="ended"), T0 + 10_001)
    assert len(sched) == 0
    assert sched.pop_due(T0 + 60_000) == []
    assert sched.next_due_ms() is None


def test_ticks_every_interval_with_rising_seq_and_phase_restart_on_change() -> None:
    sched = Schedule(tick_interval_ms=1_000)
    state = timer("a", T0 + 60_000)
    sched.track(state, T0)
    ticks = [d for t in range(T0 + 1, T0 + 3_500, 100) for d in sched.pop_due(t) if d.kind == "tick"]
    assert [d.due_ms for d in ticks] == [T0 + 1_000, T0 + 2_000, T0 + 3_000]
    assert [d.seq for d in ticks] == [1, 2, 3]
    assert sched.tick_now(replace(state, version=2), T0 + 3_200) == 4
    assert sched.next_due_ms() == T0 + 4_200


def test_scheduled_auction_has_a_start_deadline() -> None:
    sched = Schedule(tick_interval_ms=60_000)
    state, _ = apply(None, envelope(started("a", T0 + 5_000, T0 + 9_000), time_ms=T0))
    assert state is not None and state.status == "scheduled"
    sched.track(state, T0)
    assert [d.kind for d in sched.pop_due(T0 + 5_000)] == ["start"]


def test_missed_deadlines_are_due_at_once_after_rebuild() -> None:
    sched = Schedule(tick_interval_ms=60_000)
    sched.track(timer("a", T0 + 1_000), T0 + 50_000)  # rebuilt long after the end
    assert sched.next_due_ms() == T0 + 1_000
    assert [d.kind for d in sched.pop_due(T0 + 50_000)] == ["expire"]


def test_periodic_ticks_through_kafka_only_near_the_end() -> None:
    """Far from its end an auction ticks through Kafka once it comes within the horizon (the
    gateway ticks its viewers meanwhile); changes tick at once whatever the distance."""
    sched = Schedule(tick_interval_ms=1_000, tick_horizon_ms=10_000)
    state = timer("far", T0 + 60_000)
    sched.track(state, T0)
    assert sched.next_due_ms() == T0 + 50_000
    assert [d for t in range(T0, T0 + 49_999, 500) for d in sched.pop_due(t) if d.kind == "tick"] == []
    assert [d.due_ms for d in sched.pop_due(T0 + 50_000)] == [T0 + 50_000]
    assert sched.next_due_ms() == T0 + 51_000  # inside the horizon: every interval
    assert sched.tick_now(replace(state, version=2, ends_at_ms=T0 + 600_000), T0 + 51_500) == 2


def test_expiry_waits_for_the_allowed_lateness() -> None:
    sched = Schedule(tick_interval_ms=60_000, lateness_ms=250)
    sched.track(timer("a", T0 + 1_000), T0)
    assert [d.kind for d in sched.pop_due(T0 + 1_249)] == []
    assert [d.kind for d in sched.pop_due(T0 + 1_250)] == ["expire"]


def test_an_overdue_timer_ticks_through_kafka_no_more() -> None:
    """Past its deadline a timer waits for its completion (a change, which ticks at once): a
    worker folding a backlog of thousands of overdue timers does not tick each every interval."""
    sched = Schedule(tick_interval_ms=1_000, lateness_ms=250)
    sched.track(timer("due", T0 + 2_500), T0)
    ticks = [d.due_ms for t in range(T0, T0 + 10_000, 100) for d in sched.pop_due(t) if d.kind == "tick"]
    assert ticks == [T0 + 1_000, T0 + 2_000]
    sched.track(timer("late", T0 + 1_000), T0 + 60_000)  # restored long after its end
    kinds = {d.kind for t in range(T0 + 60_000, T0 + 70_000, 100) for d in sched.pop_due(t)}
    assert kinds == {"expire"}  # fired and refired, never ticked
