"""The fold's rules, one example each."""

from __future__ import annotations

from dataclasses import replace

from streams import events as ev
from streams.effects import Audited, Forgotten, ReconcileRequested, Rejected, TimerChanged, Tracked
from streams.fold import Rules, apply, apply_expired
from streams.state import RECENT_KEYS, Expired, TimerState
from tests.support.events import POLICY, T0, bid, envelope, started


def register(auction_id: str = "a1", starts: int = T0, ends: int = T0 + 60_000) -> TimerState:
    state, _ = apply(None, envelope(started(auction_id, starts, ends), time_ms=starts))
    assert state is not None
    return state


def placed(auction_id: str, at_ms: int, log_ms: int | None = None, **kw: object) -> ev.Envelope:
    """A bid placed at `at_ms` that the log took at `log_ms` (default: at once)."""
    return envelope(bid(auction_id, at_ms), log_ms=at_ms if log_ms is None else log_ms, **kw)  # type: ignore[arg-type]


def command(payload: ev.Payload, log_ms: int) -> ev.Envelope:
    return envelope(payload, time_ms=log_ms, log_ms=log_ms)


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
    early, effects = apply(state, command(ev.StartTimer("a1", 1, T0 + 5_000), log_ms=T0 + 4_000))
    assert early is state and kinds(effects) == ["audit:start_ignored:not_due"]
    running, effects = apply(state, command(ev.StartTimer("a1", 1, T0 + 5_001), log_ms=T0 + 5_001))
    assert running is not None and (running.status, running.version) == ("running", 2)
    assert kinds(effects) == ["changed:started", "audit:started:None"]


def test_a_bid_after_the_start_starts_a_scheduled_timer_before_the_command_does() -> None:
    state, _ = apply(None, envelope(started("a1", T0 + 5_000, T0 + 6_000), time_ms=T0))
    assert state is not None and state.status == "scheduled"
    new, effects = apply(state, placed("a1", T0 + 5_500))
    assert new is not None and (new.status, new.version, new.ends_at_ms) == ("running", 3, T0 + 7_500)
    assert kinds(effects) == [
        "changed:started", "audit:started:None",
        "changed:extended", "audit:extended:None", "track:auction_timer_extended",
    ]  # fmt: skip


def test_the_same_upstream_event_again_is_a_duplicate_and_changes_nothing() -> None:
    env = envelope(started("a1", T0, T0 + 60_000))
    state, _ = apply(None, env)
    again, effects = apply(state, replace(env, offset=env.offset + 100))  # the producer sent it twice
    assert again is state
    assert kinds(effects) == ["audit:duplicate:event_id_seen"]


def test_ids_are_scoped_by_source_and_type() -> None:
    """A cancel whose CloudEvents id equals an earlier bid's is a different event."""
    extending = placed("a1", T0 + 59_000)
    state, _ = apply(register(), extending)
    assert state is not None
    cancel = replace(envelope(ev.AuctionCancelled("a1", "fraud", "admin-7"), time_ms=T0 + 59_100), id=extending.id)
    cancelled, effects = apply(state, cancel)
    assert cancelled is not None and cancelled.status == "cancelled"
    assert kinds(effects)[0] == "changed:cancelled"
    other_source = replace(extending, source="another-service", offset=extending.offset + 1)
    assert kinds(apply(state, other_source)[1]) != ["audit:duplicate:event_id_seen"]


def test_an_input_delivered_again_after_a_crash_changes_and_emits_nothing() -> None:
    state = register()
    extending = placed("a1", T0 + 59_000)
    extended, _ = apply(state, extending)
    assert extended is not None and extended.version == 2
    again, effects = apply(extended, extending)  # same topic, same offset
    assert again is extended and effects == []
    earlier = placed("a1", T0 + 58_900, offset=extending.offset - 1)  # an older record of that partition
    assert apply(extended, earlier) == (extended, [])


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
    at = T0 + 59_000  # window is the last 2 s
    new, effects = apply(state, placed("a1", at))
    assert new is not None and new.ends_at_ms == at + POLICY.extension_ms
    assert (new.version, new.extension_count, new.extension_total_ms) == (2, 1, 1_000)
    assert kinds(effects) == ["changed:extended", "audit:extended:None", "track:auction_timer_extended"]
    assert isinstance(effects[0], TimerChanged) and effects[0].previous_ends_at_ms == T0 + 60_000
    assert new.updated_at_ms == at  # the log's time, not the producer's


def test_bid_before_window_changes_nothing() -> None:
    state = register()
    new, effects = apply(state, placed("a1", T0 + 10_000))
    assert new is state and effects == []


def test_extension_is_capped_at_original_end_plus_max_extension() -> None:
    policy = ev.Policy(soft_close_window_ms=5_000, extension_ms=5_000, max_extension_ms=3_000)
    state, _ = apply(None, envelope(started("a1", T0, T0 + 60_000, policy)))
    new, _ = apply(state, placed("a1", T0 + 59_000))
    assert new is not None and new.ends_at_ms == T0 + 63_000  # not 64_000
    capped, effects = apply(new, placed("a1", T0 + 62_000))
    assert capped is new and kinds(effects) == ["audit:bid_not_extended:extension_cap_reached"]


def test_late_early_and_unknown_bids_never_extend() -> None:
    state = register(starts=T0, ends=T0 + 60_000)
    late, effects = apply(state, placed("a1", T0 + 60_000))
    assert late is state and kinds(effects) == ["audit:bid_ignored:after_end"]
    early, effects = apply(state, placed("a1", T0 - 1, log_ms=T0 + 1))
    assert early is state and kinds(effects) == ["audit:bid_ignored:before_start"]
    unknown, effects = apply(None, placed("nope", T0))
    assert unknown is None and kinds(effects) == ["audit:rejected:unknown_auction", "reject:unknown_auction"]


def test_a_bid_the_log_took_after_the_deadline_is_late_even_before_the_completion() -> None:
    """Event time decides: placed in the window but appended at or after the end (no lateness
    allowed) extends nothing, whether or not the completion has been folded yet."""
    state = register(ends=T0 + 60_000)
    late, effects = apply(state, placed("a1", T0 + 59_990, log_ms=T0 + 60_000))
    assert late is state and kinds(effects) == ["audit:bid_ignored:late_bid"]
    assert isinstance(effects[0], Audited) and effects[0].detail["appended_after_end_ms"] == 0
    done, _ = apply(state, command(ev.ExpireTimer("a1", 1, T0 + 60_000), log_ms=T0 + 60_000))
    assert done is not None
    after, effects = apply(done, placed("a1", T0 + 59_990, log_ms=T0 + 60_500))
    assert after is done and kinds(effects) == ["audit:bid_ignored:late_bid"]


def test_allowed_lateness_lets_a_straggler_extend_and_delays_completion() -> None:
    rules = Rules(allowed_lateness_ms=500)
    state = register(ends=T0 + 60_000)
    extended, effects = apply(state, placed("a1", T0 + 59_990, log_ms=T0 + 60_499), rules)
    assert extended is not None and extended.ends_at_ms == T0 + 61_990
    beyond, effects = apply(state, placed("a1", T0 + 59_990, log_ms=T0 + 60_500), rules)
    assert beyond is state and kinds(effects) == ["audit:bid_ignored:late_bid"]
    early, effects = apply(state, command(ev.ExpireTimer("a1", 1, T0 + 60_100), log_ms=T0 + 60_499), rules)
    assert early is state and kinds(effects) == ["audit:expire_ignored:not_due"]
    done, _ = apply(state, command(ev.ExpireTimer("a1", 1, T0 + 60_500), log_ms=T0 + 60_500), rules)
    assert done is not None and done.status == "ended"


def test_expire_completes_only_when_due_by_the_log_and_current() -> None:
    state = register(ends=T0 + 60_000)
    not_due, effects = apply(state, command(ev.ExpireTimer("a1", 1, T0 + 59_999), log_ms=T0 + 59_999))
    assert not_due is state and kinds(effects) == ["audit:expire_ignored:not_due"]
    stale, effects = apply(state, command(ev.ExpireTimer("a1", 7, T0 + 60_000), log_ms=T0 + 60_000))
    assert stale is state and kinds(effects) == ["audit:expire_ignored:version_mismatch"]
    done, effects = apply(state, command(ev.ExpireTimer("a1", 1, T0 + 60_001), log_ms=T0 + 60_003))
    assert done is not None and (done.status, done.version, done.ended_at_ms) == ("ended", 2, T0 + 60_003)
    assert kinds(effects) == ["changed:completed", "audit:completed:None", "track:auction_timer_completed"]
    again, effects = apply(done, command(ev.ExpireTimer("a1", 1, T0 + 60_010), log_ms=T0 + 60_010))
    assert again is done and kinds(effects) == ["audit:expire_ignored:already_ended"]


def test_a_command_claiming_a_later_time_than_the_log_cannot_end_an_auction_early() -> None:
    """A forged (or fast-clocked) ExpireTimer: fired_at says the end passed, the broker says not yet."""
    state = register(ends=T0 + 600_000)
    forged, effects = apply(state, command(ev.ExpireTimer("a1", 1, T0 + 600_000), log_ms=T0 + 1_000))
    assert forged is state and kinds(effects) == ["audit:expire_ignored:not_due"]


def test_expire_for_an_extended_version_is_a_no_op() -> None:
    state = register(ends=T0 + 60_000)
    extended, _ = apply(state, placed("a1", T0 + 59_500))
    stale, effects = apply(extended, command(ev.ExpireTimer("a1", 1, T0 + 60_001), log_ms=T0 + 60_001))
    assert stale is extended and kinds(effects) == ["audit:expire_ignored:version_mismatch"]


def test_cancel_ends_a_live_timer_once_at_the_log_time() -> None:
    state = register()
    # The producer's clock says 9999; the log's says T0 + 5: the log decides.
    cancel = envelope(ev.AuctionCancelled("a1", "fraud", "admin-7"), time_ms=253_402_214_400_000, log_ms=T0 + 5)
    cancelled, effects = apply(state, cancel)
    assert cancelled is not None and (cancelled.status, cancelled.version, cancelled.ended_at_ms) == (
        "cancelled",
        2,
        T0 + 5,
    )
    assert kinds(effects) == ["changed:cancelled", "audit:cancelled:fraud", "track:auction_timer_cancelled"]
    again, effects = apply(cancelled, envelope(ev.AuctionCancelled("a1", "again", "admin-7"), log_ms=T0 + 10))
    assert again is cancelled and kinds(effects) == ["audit:cancel_ignored:already_cancelled"]
    bid_after, effects = apply(cancelled, placed("a1", T0 + 10))
    assert bid_after is cancelled and kinds(effects) == ["audit:bid_ignored:auction_cancelled"]


def test_reconcile_asks_for_a_repair_without_changing_state() -> None:
    state = register()
    same, effects = apply(state, envelope(ev.Reconcile("a1", "gateway")))
    assert same is state and kinds(effects) == ["reconcile"]


def test_remembered_event_keys_are_bounded() -> None:
    state = register(ends=T0 + 10_000_000)
    long_window = replace(state, policy=ev.Policy(10_000_000, 1_000, 86_400_000))
    for _ in range(100):
        new, _ = apply(long_window, placed("a1", long_window.ends_at_ms - 1, log_ms=T0 + 1))
        assert new is not None
        long_window = new
    assert len(long_window.recent_keys) == RECENT_KEYS
    assert long_window.version == 101


def ended(ends: int = T0 + 60_000) -> TimerState:
    state, _ = apply(register(ends=ends), command(ev.ExpireTimer("a1", 1, ends), log_ms=ends))
    assert state is not None and state.status == "ended"
    return state


def test_an_ended_auction_is_forgotten_only_after_its_retention() -> None:
    rules = Rules(ended_retention_ms=10_000)
    done = ended()
    _, effects = apply(register(), command(ev.ForgetTimer("a1", 1, T0 + 99_000), log_ms=T0 + 99_000), rules)
    assert kinds(effects) == ["audit:forget_ignored:still_live"]
    early, effects = apply(done, command(ev.ForgetTimer("a1", 2, T0 + 69_999), log_ms=T0 + 69_999), rules)
    assert early is done and kinds(effects) == ["audit:forget_ignored:not_due"]
    stale, effects = apply(done, command(ev.ForgetTimer("a1", 1, T0 + 70_000), log_ms=T0 + 70_000), rules)
    assert stale is done and kinds(effects) == ["audit:forget_ignored:version_mismatch"]
    gone, effects = apply(done, command(ev.ForgetTimer("a1", 2, T0 + 70_000), log_ms=T0 + 70_000), rules)
    assert gone is None
    assert effects[0] == Forgotten("a1", 2, T0 + 60_000, T0 + 70_000)
    assert kinds(effects[1:]) == ["audit:forgotten:None"]


def test_what_comes_for_a_forgotten_auction_is_told_it_expired_then_the_marker_goes() -> None:
    rules = Rules(ended_retention_ms=10_000)
    marker = Expired("expired", "a1", 2, T0 + 60_000, T0 + 70_000)
    kept, effects = apply_expired(marker, placed("a1", T0 + 71_000), rules)
    assert kept is marker
    assert kinds(effects) == ["audit:rejected:expired_auction", "reject:expired_auction"]
    early, effects = apply_expired(marker, command(ev.ForgetTimer("a1", 2, T0 + 79_999), log_ms=T0 + 79_999), rules)
    assert early is marker and kinds(effects) == ["audit:forget_ignored:not_due"]
    gone, effects = apply_expired(marker, command(ev.ForgetTimer("a1", 2, T0 + 80_000), log_ms=T0 + 80_000), rules)
    assert gone is None and kinds(effects) == ["audit:marker_removed:None"]
