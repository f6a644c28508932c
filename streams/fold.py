"""Where an event becomes state: the pure, deterministic timer fold.

`apply(state, envelope, rules) -> (new_state, effects)` does no I/O and reads no clock:
time comes from the log (each input's broker append time, `envelope.log_ms`), so the
live worker and an offline replay reach the same decisions from the same log. Rules:

- Registration is idempotent: the same upstream event (source, type and id), or the same
  times and policy, change nothing and are audited as duplicates; different times are
  rejected. A registration the log took at or after its start is `running`, else `scheduled`.
- Soft close: a bid placed at b with ends_at - window <= b < ends_at moves ends_at to
  min(b + extension_ms, original_ends_at + max_extension_ms) when that is later.
- Event time decides, not arrival: a bid placed before the end that the log took at or
  after ends_at + allowed lateness is a `late_bid` (audited with both times) and extends
  nothing, whether or not the completion has been folded yet. A bid the log took earlier
  is applied as usual; the worker folds every such bid before the completion.
- Bids before the start or placed at/after the end are audited and extend nothing; bids
  (and commands) for unknown auctions are audited and dead-lettered.
- ExpireTimer ends the auction only when its version is the current one and the log took
  the command at or after ends_at + allowed lateness (the broker's clock, never the firing
  worker's), so completion happens once however many fire and a forged early command
  cannot end an auction.
- StartTimer, or the first input the log took at or after starts_at, moves `scheduled` to
  `running` (a `started` change).
- Cancel ends a live timer with status cancelled.
- ForgetTimer removes an ended or cancelled auction once the log passed its end plus the
  retention of ended auctions; what stays is a small marker (`Expired`) so that a late bid is
  rejected as `expired_auction`, and after one more retention the marker goes too.
- Version is +1 on every change and unchanged otherwise.

An input delivered again after a crash (ordered, in the log's order, at or before the input
that made the stored version) changes nothing and emits nothing: the worker folds an
auction's inputs in that order and wrote the version only after everything folded before it
was published. Inputs after it are folded again from that version, to the same records.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, replace
from typing import Any

from streams import events as ev
from streams.effects import Audited, Effect, Forgotten, ReconcileRequested, Rejected, TimerChanged, Tracked
from streams.state import RECENT_KEYS, ChangeKind, Expired, Status, TimerState

Result = tuple[TimerState | None, list[Effect]]
Changed = tuple[TimerState, list[Effect]]


@dataclass(frozen=True, slots=True)
class Rules:
    """What the fold needs besides the log: configuration that replay must use too."""

    allowed_lateness_ms: int = 0
    ended_retention_ms: int = 7 * 86_400_000


NO_LATENESS = Rules()


def event_key(env: ev.Envelope) -> int:
    """Upstream event identity, scoped by source and type: two producers may reuse an id."""
    raw = f"{env.source}\0{env.type}\0{env.id}".encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


def position(env: ev.Envelope) -> tuple[int, int, int]:
    """Where `env` sits in the log's order of its partition number (see streams/order.py)."""
    return (env.log_ms, env.topic_index, env.offset)


def already_applied(state: TimerState, env: ev.Envelope) -> bool:
    """Was `env` folded before the input that made the stored version (a redelivery)?"""
    return env.topic_index >= 0 and position(env) <= state.changed_by


def apply(state: TimerState | None, env: ev.Envelope, rules: Rules = NO_LATENESS) -> Result:
    data = env.data
    if state is not None and already_applied(state, env):
        return state, []  # delivered again after a crash: its change is in the state, its records are out
    key = event_key(env)
    if state is not None and key in state.recent_keys:
        return state, [_audit(env, "duplicate", state.version, "event_id_seen")]
    if isinstance(data, ev.AuctionStarted):
        return _register(state, env, data, key)
    if state is None:
        return None, _unknown(env)
    if isinstance(data, ev.ForgetTimer):
        return _forget(state, env, data, rules)
    effects: list[Effect] = []
    current = state
    if current.status == "scheduled" and env.log_ms >= current.starts_at_ms and not isinstance(data, ev.StartTimer):
        current, effects = _running(current, env, key)
    new: TimerState
    if isinstance(data, ev.BidPlaced):
        new, more = _bid(current, env, data, key, rules)
    elif isinstance(data, ev.ExpireTimer):
        new, more = _expire(current, env, data, key, rules)
    elif isinstance(data, ev.StartTimer):
        new, more = _start(current, env, data, key)
    elif isinstance(data, ev.AuctionCancelled):
        new, more = _cancel(current, env, data, key)
    else:
        new, more = current, [ReconcileRequested(data.auction_id, data.requested_by)]
    return new, effects + more


def _audit(env: ev.Envelope, action: str, version: int | None, reason: str | None = None, **detail: Any) -> Audited:
    detail.setdefault("log_ms", env.log_ms)
    return Audited(action, env.auction_id, version, env.id, env.type, env.traceparent, reason, detail)


def _changed(
    state: TimerState, env: ev.Envelope, key: int, kind: ChangeKind, status: Status, **fields: Any
) -> TimerState:
    """The next version of `state`, made by `env`."""
    keys = state.recent_keys if key in state.recent_keys else (*state.recent_keys, key)[-RECENT_KEYS:]
    return replace(
        state,
        version=state.version + 1,
        status=status,
        traceparent=env.traceparent,
        last_event_id=env.id,
        recent_keys=keys,
        changed_by=position(env),
        updated_at_ms=env.log_ms,
        last_change=kind,
        **fields,
    )


def _track(name: str, state: TimerState, **extra: Any) -> Tracked:
    props = {
        "auction_id": state.auction_id,
        "version": state.version,
        "status": state.status,
        "ends_at_ms": state.ends_at_ms,
        "trace_id": state.trace_id,
        **extra,
    }
    return Tracked(name, state.auction_id, state.version, state.traceparent, props)


def _unknown(env: ev.Envelope) -> list[Effect]:
    return [
        _audit(env, "rejected", None, "unknown_auction"),
        Rejected("unknown_auction", f"no timer is registered for auction {env.auction_id!r}"),
    ]


def _register(state: TimerState | None, env: ev.Envelope, data: ev.AuctionStarted, key: int) -> Result:
    if state is not None:
        same = (state.starts_at_ms, state.original_ends_at_ms, state.policy) == (
            data.starts_at_ms,
            data.ends_at_ms,
            data.policy,
        )
        if same:
            return state, [_audit(env, "duplicate", state.version, "same_registration")]
        detail = (
            f"auction {data.auction_id!r} is already registered with starts_at_ms={state.starts_at_ms}, "
            f"ends_at_ms={state.original_ends_at_ms}, policy={state.policy}"
        )
        return state, [
            _audit(env, "rejected", state.version, "conflicting_registration", requested=_times(data)),
            Rejected("conflicting_registration", detail),
        ]
    new = TimerState(
        auction_id=data.auction_id,
        version=1,
        status="running" if env.log_ms >= data.starts_at_ms else "scheduled",
        starts_at_ms=data.starts_at_ms,
        original_ends_at_ms=data.ends_at_ms,
        ends_at_ms=data.ends_at_ms,
        policy=data.policy,
        maker_id=data.maker_id,
        extension_count=0,
        extension_total_ms=0,
        traceparent=env.traceparent,
        last_event_id=env.id,
        recent_keys=(key,),
        changed_by=position(env),
        updated_at_ms=env.log_ms,
        last_change="registered",
    )
    return new, [
        TimerChanged("registered", new, env.id, env.type),
        _audit(env, "registered", 1, **_times(data)),
        _track("auction_timer_started", new, starts_at_ms=new.starts_at_ms, maker_id=new.maker_id),
    ]


def _times(data: ev.AuctionStarted) -> dict[str, Any]:
    return {
        "starts_at_ms": data.starts_at_ms,
        "ends_at_ms": data.ends_at_ms,
        "soft_close_window_ms": data.policy.soft_close_window_ms,
        "extension_ms": data.policy.extension_ms,
        "max_extension_ms": data.policy.max_extension_ms,
    }


def _running(state: TimerState, env: ev.Envelope, key: int) -> Changed:
    """The log passed starts_at before the StartTimer came: this input starts the timer."""
    new = _changed(state, env, key, "started", "running")
    return new, [TimerChanged("started", new, env.id, env.type), _audit(env, "started", new.version)]


def _bid(state: TimerState, env: ev.Envelope, bid: ev.BidPlaced, key: int, rules: Rules) -> Changed:
    placed = bid.placed_at_ms
    ctx = {"bid_id": bid.bid_id, "placed_at_ms": placed, "ends_at_ms": state.ends_at_ms}
    if state.status == "cancelled":
        return state, [_audit(env, "bid_ignored", state.version, "auction_cancelled", **ctx)]
    if placed >= state.ends_at_ms:
        return state, [_audit(env, "bid_ignored", state.version, "after_end", **ctx)]
    if state.status == "ended" or env.log_ms >= state.ends_at_ms + rules.allowed_lateness_ms:
        late = env.log_ms - state.ends_at_ms
        return state, [_audit(env, "bid_ignored", state.version, "late_bid", appended_after_end_ms=late, **ctx)]
    if placed < state.starts_at_ms:
        return state, [_audit(env, "bid_ignored", state.version, "before_start", **ctx)]
    if placed < state.ends_at_ms - state.policy.soft_close_window_ms:
        return state, []  # an ordinary bid: nothing about the timer changes
    cap = state.original_ends_at_ms + state.policy.max_extension_ms
    wanted = placed + state.policy.extension_ms
    new_end = min(wanted, cap)
    if new_end <= state.ends_at_ms:
        if wanted > state.ends_at_ms:  # it would have extended, but the 24 h / policy cap stops it
            return state, [_audit(env, "bid_not_extended", state.version, "extension_cap_reached", cap_ms=cap, **ctx)]
        return state, []
    new = _changed(
        state,
        env,
        key,
        "extended",
        "running",
        ends_at_ms=new_end,
        extension_count=state.extension_count + 1,
        extension_total_ms=new_end - state.original_ends_at_ms,
    )
    return new, [
        TimerChanged("extended", new, env.id, env.type, previous_ends_at_ms=state.ends_at_ms),
        _audit(env, "extended", new.version, None, new_ends_at_ms=new_end, capped=new_end < wanted, **ctx),
        _track("auction_timer_extended", new, previous_ends_at_ms=state.ends_at_ms, bid_id=bid.bid_id),
    ]


def _expire(state: TimerState, env: ev.Envelope, cmd: ev.ExpireTimer, key: int, rules: Rules) -> Changed:
    due = state.ends_at_ms + rules.allowed_lateness_ms
    stale = _stale_command(state, env, cmd.version, due, "expire_ignored")
    if stale:
        return state, stale
    new = _changed(state, env, key, "completed", "ended", ended_at_ms=env.log_ms)
    lateness = env.log_ms - state.ends_at_ms
    return new, [
        TimerChanged("completed", new, env.id, env.type),
        _audit(env, "completed", new.version, None, fired_at_ms=cmd.fired_at_ms, lateness_ms=lateness),
        _track("auction_timer_completed", new, extension_count=new.extension_count, lateness_ms=lateness),
    ]


def _start(state: TimerState, env: ev.Envelope, cmd: ev.StartTimer, key: int) -> Changed:
    if state.status == "running":
        return state, [_audit(env, "start_ignored", state.version, "already_running")]
    stale = _stale_command(state, env, cmd.version, state.starts_at_ms, "start_ignored")
    if stale:
        return state, stale
    new = _changed(state, env, key, "started", "running")
    return new, [TimerChanged("started", new, env.id, env.type), _audit(env, "started", new.version)]


def _stale_command(state: TimerState, env: ev.Envelope, version: int, due_ms: int, action: str) -> list[Effect]:
    """Why a scheduler command no longer applies, as an audit entry; empty when it does apply.
    "Due" is judged by the log's clock: the command's own broker time."""
    if not state.live:
        return [_audit(env, action, state.version, f"already_{state.status}")]
    if version != state.version:
        return [_audit(env, action, state.version, "version_mismatch", command_version=version)]
    if due_ms > env.log_ms:
        return [_audit(env, action, state.version, "not_due", due_ms=due_ms)]
    return []


def _cancel(state: TimerState, env: ev.Envelope, cmd: ev.AuctionCancelled, key: int) -> Changed:
    if not state.live:
        return state, [_audit(env, "cancel_ignored", state.version, f"already_{state.status}")]
    new = _changed(state, env, key, "cancelled", "cancelled", ended_at_ms=env.log_ms)
    return new, [
        TimerChanged("cancelled", new, env.id, env.type),
        _audit(env, "cancelled", new.version, cmd.reason, actor=cmd.actor),
        _track("auction_timer_cancelled", new, reason=cmd.reason, actor=cmd.actor),
    ]


def _forget(state: TimerState, env: ev.Envelope, cmd: ev.ForgetTimer, rules: Rules) -> Result:
    """An ended or cancelled auction leaves the table once the log passed its end + retention."""
    if state.live:
        return state, [_audit(env, "forget_ignored", state.version, "still_live")]
    if cmd.version != state.version:
        return state, [_audit(env, "forget_ignored", state.version, "version_mismatch", command_version=cmd.version)]
    ended = state.ended_at_ms if state.ended_at_ms is not None else state.updated_at_ms
    if env.log_ms < ended + rules.ended_retention_ms:
        return state, [_audit(env, "forget_ignored", state.version, "not_due", due_ms=ended + rules.ended_retention_ms)]
    return None, [
        Forgotten(state.auction_id, state.version, ended, env.log_ms),
        _audit(env, "forgotten", state.version, None, ended_at_ms=ended),
    ]


def apply_expired(marker: Expired, env: ev.Envelope, rules: Rules = NO_LATENESS) -> tuple[Expired | None, list[Effect]]:
    """An input for an auction that was removed after its retention (only its marker is left); a
    registration is not one: it registers a new auction under the old id."""
    data = env.data
    if isinstance(data, ev.ForgetTimer):
        if data.version == marker.version and env.log_ms >= marker.forgotten_at_ms + rules.ended_retention_ms:
            return None, [_audit(env, "marker_removed", marker.version, None, ended_at_ms=marker.ended_at_ms)]
        return marker, [_audit(env, "forget_ignored", marker.version, "not_due")]
    detail = (
        f"auction {env.auction_id!r} ended at {marker.ended_at_ms} and was removed at {marker.forgotten_at_ms},"
        f" after the retention of ended auctions ({rules.ended_retention_ms} ms)"
    )
    return marker, [
        _audit(env, "rejected", marker.version, "expired_auction", ended_at_ms=marker.ended_at_ms),
        Rejected("expired_auction", detail),
    ]
