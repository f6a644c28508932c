"""The fold's rules, one example each."""

from __future__ import annotations

from dataclasses import replace

from streams import events as ev
from streams.effects import Audited, ReconcileRequested, Rejected, TimerChanged, Tracked
from streams.fold import apply
from streams.state import TimerState
from tests.support.events import POLICY, T0, bid, envelope, started


def register(auction_id: str = "a1", starts: int = T0, ends: int = T0 + 60_000) -> TimerState:
    state, _ = apply(None, envelope(started(auction_id, starts, ends), time_ms=starts))
    assert state is not None
    return state


def kinds(effects: list) -> list[str]:
    out = []
    for e in effects:
        if isinstance(e, TimerChanged):
            out.append(f"changed:{e.kind}")
        elif isinstance(e, Audited):
            out.append(f"audit:{e.action}:{e.reason}")
        elif isinstance(e, Tracked):
            out.append(f"track:{e.event}")
        elif isinstance(e, Rejected):
            out.append(f"reject:{e.reason}")
        elif isinstance(e, ReconcileRequested):
            out.append("reconcile")
    return out


def test_registration_creates_version_one_running_timer() -> None:
    env = envelope(started("a1", T0, T0 + 60_000), time_ms=T0)
    state, effects = apply(None, env)
    assert state is not None
    assert (state.version, state.status, state.ends_at_ms, state.original_ends_at_ms) == (
        1,
        "running",
        T0 + 60_000,
        T0 + 60_000,
    )
    assert state.traceparent == env.traceparent
    assert kinds(effects) == ["changed:registered", "audit:registered:None", "track:auction_timer_started"]


def test_registration_before_start_is_scheduled_and_start_command_runs_it() -> None:
    state, _ = apply(None, envelope(started("a1", T0 + 5_000, T0 + 60_000), time_ms=T0))
    assert state is not None and state.status == "scheduled"
    early, effects = apply(state, envelope(ev.StartTimer("a1", 1, T0 + 4_000)))
    assert early is state and kinds(effects) == ["audit:start_ignored:not_due"]
    running, effects = apply(state, envelope(ev.StartTimer("a1", 1, T0 + 5_001)))
    assert running is not None and (running.status, running.version) == ("running", 2)
    assert kinds(effects) == ["changed:started", "audit:started:None"]


def test_same_event_id_is_a_duplicate_and_republishes_the_change_it_made() -> None:
    env = envelope(started("a1", T0, T0 + 60_000))
    state, _ = apply(None, env)
    again, effects = apply(state, env)
    assert again is state
    assert kinds(effects) == ["audit:duplicate:event_id_seen", "changed:registered"]
    assert isinstance(effects[1], TimerChanged) and effects[1].redelivery


def test_same_times_with_a_new_id_is_a_duplicate() -> None:
    state = register()
    again, effects = apply(state, envelope(started("a1", T0, T0 + 60_000)))
    assert again is state and kinds(effects) == ["audit:duplicate:same_registration"]


def test_conflicting_registration_is_rejected() -> None:
    state = register()
    again, effects = apply(state, envelope(started("a1", T0, T0 + 99_000)))
    assert again is state
    assert kinds(effects) == ["audit:rejected:conflicting_registration", "reject:conflicting_registration"]


def test_bid_in_soft_close_window_extends_to_bid_plus_extension() -> None:
    state = register(ends=T0 + 60_000)
    placed = T0 + 59_000  # window is the last 2 s
    new, effects = apply(state, envelope(bid("a1", placed)))
    assert new is not None and new.ends_at_ms == placed + POLICY.extension_ms
    assert (new.version, new.extension_count, new.extension_total_ms) == (2, 1, 1_000)
    assert kinds(effects) == ["changed:extended", "audit:extended:None", "track:auction_timer_extended"]
    assert isinstance(effects[0], TimerChanged) and effects[0].previous_ends_at_ms == T0 + 60_000


def test_bid_before_window_changes_nothing() -> None:
    state = register()
    new, effects = apply(state, envelope(bid("a1", T0 + 10_000)))
    assert new is state and effects == []


def test_extension_is_capped_at_original_end_plus_max_extension() -> None:
    policy = ev.Policy(soft_close_window_ms=5_000, extension_ms=5_000, max_extension_ms=3_000)
    state, _ = apply(None, envelope(started("a1", T0, T0 + 60_000, policy)))
    new, _ = apply(state, envelope(bid("a1", T0 + 59_000)))
    assert new is not None and new.ends_at_ms == T0 + 63_000  # not 64_000
    capped, effects = apply(new, envelope(bid("a1", T0 + 62_000)))
    assert capped is new and kinds(effects) == ["audit:bid_not_extended:extension_cap_reached"]


def test_late_early_and_unknown_bids_never_extend() -> None:
    state = register(starts=T0, ends=T0 + 60_000)
    late, effects = apply(state, envelope(bid("a1", T0 + 60_000)))
    assert late is state and kinds(effects) == ["audit:bid_ignored:after_end"]
    early, effects = apply(state, envelope(bid("a1", T0 - 1)))
    assert early is state and kinds(effects) == ["audit:bid_ignored:before_start"]
    unknown, effects = apply(None, envelope(bid("nope", T0)))
    assert unknown is None and kinds(effects) == ["audit:rejected:unknown_auction", "reject:unknown_auction"]


def test_expire_completes_only_when_due_and_current() -> None:
    state = register(ends=T0 + 60_000)
    not_due, effects = apply(state, envelope(ev.ExpireTimer("a1", 1, T0 + 59_999)))
    assert not_due is state and kinds(effects) == ["audit:expire_ignored:not_due"]
    stale, effects = apply(state, envelope(ev.ExpireTimer("a1", 7, T0 + 60_000)))
    assert stale is state and kinds(effects) == ["audit:expire_ignored:version_mismatch"]
    done, effects = apply(state, envelope(ev.ExpireTimer("a1", 1, T0 + 60_003)))
    assert done is not None and (done.status, done.version, done.ended_at_ms) == ("ended", 2, T0 + 60_003)
    assert kinds(effects) == ["changed:completed", "audit:completed:None", "track:auction_timer_completed"]
    again, effects = apply(done, envelope(ev.ExpireTimer("a1", 1, T0 + 60_010)))
    assert again is done and kinds(effects) == ["audit:expire_ignored:already_ended"]


def test_expire_for_an_extended_version_is_a_no_op() -> None:
    state = register(ends=T0 + 60_000)
    extended, _ = apply(state, envelope(bid("a1", T0 + 59_500)))
    stale, effects = apply(extended, envelope(ev.ExpireTimer("a1", 1, T0 + 60_001)))
    assert stale is extended and kinds(effects) == ["audit:expire_ignored:version_mismatch"]


def test_cancel_ends_a_live_timer_once() -> None:
    state = register()
    cancelled, effects = apply(state, envelope(ev.AuctionCancelled("a1", "fraud", "admin-7"), time_ms=T0 + 5))
    assert cancelled is not None and (cancelled.status, cancelled.version, cancelled.ended_at_ms) == (
        "cancelled",
        2,
        T0 + 5,
    )
    assert kinds(effects) == ["changed:cancelled", "audit:cancelled:fraud", "track:auction_timer_cancelled"]
    again, effects = apply(cancelled, envelope(ev.AuctionCancelled("a1", "again", "admin-7")))
    assert again is cancelled and kinds(effects) == ["audit:cancel_ignored:already_cancelled"]
    bid_after, effects = apply(cancelled, envelope(bid("a1", T0 + 10)))
    assert bid_after is cancelled and kinds(effects) == ["audit:bid_ignored:auction_cancelled"]


def test_reconcile_asks_for_a_repair_without_changing_state() -> None:
    state = register()
    same, effects = apply(state, envelope(ev.Reconcile("a1", "gateway")))
    assert same is state and kinds(effects) == ["reconcile"]


def test_recent_event_ids_are_bounded() -> None:
    state = register(ends=T0 + 10_000_000)
    long_window = replace(state, policy=ev.Policy(10_000_000, 1_000, 86_400_000))
    for _ in range(100):
        new, _ = apply(long_window, envelope(bid("a1", long_window.ends_at_ms - 1)))
        assert new is not None
        long_window = new
    assert len(long_window.recent_event_ids) == 32
    assert long_window.version == 101
