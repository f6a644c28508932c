"""Where an event becomes state: the pure, deterministic timer fold.

`apply(state, envelope) -> (new_state, effects)` does no I/O and reads no clock:
time comes from the events, so the live worker and an offline replay agree.
Rules:

- Registration is idempotent: the same event id, or the same times and policy,
  change nothing and are audited as duplicates; different times are rejected.
- Soft close: a bid at b with ends_at - window <= b < ends_at moves ends_at to
  min(b + extension_ms, original_ends_at + max_extension_ms) when that is later.
- Bids before the start or at/after the end are audited and extend nothing;
  bids (and commands) for unknown auctions are audited and dead-lettered.
- ExpireTimer ends the auction only when its version is the current one and
  ends_at <= fired_at_ms, so completion happens once however many fire.
- Cancel ends a live timer with status cancelled.
- Version is +1 on every change and unchanged otherwise.

An input seen again (its id is remembered) changes nothing; when it is the one
that made the current version, its timer event is published again, because a
crash may have lost the first publication (consumers drop the repeat by id).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from streams import events as ev
from streams.effects import Audited, Effect, ReconcileRequested, Rejected, TimerChanged, Tracked
from streams.state import RECENT_IDS, ChangeKind, Status, TimerState

Result = tuple[TimerState | None, list[Effect]]


def apply(state: TimerState | None, env: ev.Envelope) -> Result:
    data = env.data
    if state is not None and (env.id in state.recent_event_ids or env.id == state.registered_event_id):
        return state, _seen_again(state, env)
    if isinstance(data, ev.AuctionStarted):
        return _register(state, env, data)
    if state is None:
        return None, _unknown(env)
    if isinstance(data, ev.BidPlaced):
        return _bid(state, env, data)
    if isinstance(data, ev.ExpireTimer):
        return _expire(state, env, data)
    if isinstance(data, ev.StartTimer):
        return _start(state, env, data)
    if isinstance(data, ev.AuctionCancelled):
        return _cancel(state, env, data)
    return state, [ReconcileRequested(data.auction_id, data.requested_by)]


def _audit(env: ev.Envelope, action: str, version: int | None, reason: str | None = None, **detail: Any) -> Audited:
    return Audited(action, env.auction_id, version, env.id, env.type, env.traceparent, reason, detail)


def _changed(state: TimerState, env: ev.Envelope, kind: ChangeKind, status: Status, **fields: Any) -> TimerState:
    """The next version of `state`, made by `env`."""
    return replace(
        state,
        version=state.version + 1,
        status=status,
        traceparent=env.traceparent,
        last_event_id=env.id,
        recent_event_ids=(*state.recent_event_ids, env.id)[-RECENT_IDS:],
        updated_at_ms=env.time_ms,
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


def _seen_again(state: TimerState, env: ev.Envelope) -> list[Effect]:
    effects: list[Effect] = [_audit(env, "duplicate", state.version, "event_id_seen")]
    if env.id == state.last_event_id:
        effects.append(TimerChanged(state.last_change, state, env.id, env.type, redelivery=True))
    return effects


def _unknown(env: ev.Envelope) -> list[Effect]:
    return [
        _audit(env, "rejected", None, "unknown_auction"),
        Rejected("unknown_auction", f"no timer is registered for auction {env.auction_id!r}"),
    ]


def _register(state: TimerState | None, env: ev.Envelope, data: ev.AuctionStarted) -> Result:
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
        status="running" if env.time_ms >= data.starts_at_ms else "scheduled",
        starts_at_ms=data.starts_at_ms,
        original_ends_at_ms=data.ends_at_ms,
        ends_at_ms=data.ends_at_ms,
        policy=data.policy,
        maker_id=data.maker_id,
        extension_count=0,
        extension_total_ms=0,
        traceparent=env.traceparent,
        registered_event_id=env.id,
        last_event_id=env.id,
        recent_event_ids=(env.id,),
        updated_at_ms=env.time_ms,
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


def _bid(state: TimerState, env: ev.Envelope, bid: ev.BidPlaced) -> Result:
    placed = bid.placed_at_ms
    ctx = {"bid_id": bid.bid_id, "placed_at_ms": placed, "ends_at_ms": state.ends_at_ms}
    if state.status == "cancelled":
        return state, [_audit(env, "bid_ignored", state.version, "auction_cancelled", **ctx)]
    if state.status == "ended" or placed >= state.ends_at_ms:
        return state, [_audit(env, "bid_ignored", state.version, "after_end", **ctx)]
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


def _expire(state: TimerState, env: ev.Envelope, cmd: ev.ExpireTimer) -> Result:
    stale = _stale_command(state, env, cmd.version, state.ends_at_ms, cmd.fired_at_ms, "expire_ignored")
    if stale:
        return state, stale
    new = _changed(state, env, "completed", "ended", ended_at_ms=cmd.fired_at_ms)
    lateness = cmd.fired_at_ms - state.ends_at_ms
    return new, [
        TimerChanged("completed", new, env.id, env.type),
        _audit(env, "completed", new.version, None, fired_at_ms=cmd.fired_at_ms, lateness_ms=lateness),
        _track("auction_timer_completed", new, extension_count=new.extension_count, lateness_ms=lateness),
    ]


def _start(state: TimerState, env: ev.Envelope, cmd: ev.StartTimer) -> Result:
    if state.status == "running":
        return state, [_audit(env, "start_ignored", state.version, "already_running")]
    stale = _stale_command(state, env, cmd.version, state.starts_at_ms, cmd.fired_at_ms, "start_ignored")
    if stale:
        return state, stale
    new = _changed(state, env, "started", "running")
    return new, [TimerChanged("started", new, env.id, env.type), _audit(env, "started", new.version)]


def _stale_command(
    state: TimerState, env: ev.Envelope, version: int, due_ms: int, fired_ms: int, action: str
) -> list[Effect]:
    """Why a scheduler command no longer applies, as an audit entry; empty when it does apply."""
    if not state.live:
        return [_audit(env, action, state.version, f"already_{state.status}")]
    if version != state.version:
        return [_audit(env, action, state.version, "version_mismatch", command_version=version)]
    if due_ms > fired_ms:
        return [_audit(env, action, state.version, "not_due", due_ms=due_ms, fired_at_ms=fired_ms)]
    return []


def _cancel(state: TimerState, env: ev.Envelope, cmd: ev.AuctionCancelled) -> Result:
    if not state.live:
        return state, [_audit(env, "cancel_ignored", state.version, f"already_{state.status}")]
    new = _changed(state, env, "cancelled", "cancelled", ended_at_ms=env.time_ms)
    return new, [
        TimerChanged("cancelled", new, env.id, env.type),
        _audit(env, "cancelled", new.version, cmd.reason, actor=cmd.actor),
        _track("auction_timer_cancelled", new, reason=cmd.reason, actor=cmd.actor),
    ]
