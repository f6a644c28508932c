"""The thin outer layer around the fold: one input record in, records out, state updated.

`TimerProcessor.process` decodes a record, checks that it sits where its key says, folds it
into the state and turns the fold's effects into Kafka records. It is plain code over a
`States` mapping (no Kafka, no clock), so the worker, replay and functional tests all run
it the same way; what it produces depends only on the state and the record. It never raises
for bad input: anything that cannot be applied becomes a DLQ record with its reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, assert_never

from aiokafka.partitioner import murmur2

from streams import effects as fx
from streams import events as ev
from streams import outputs
from streams.decode import decode
from streams.errors import InvalidEvent
from streams.fold import NO_LATENESS, Rules, already_applied, apply, apply_expired
from streams.message import Message
from streams.metrics import LATE_BIDS, REDELIVERED, REJECTED, TRANSITIONS
from streams.state import Expired, TimerState
from streams.tracing import current_trace_id, derived_traceparent, trace_id_of

log = logging.getLogger("auction_timer.processor")
MAX_KEY_BYTES = 64  # an auction id; a longer key cannot be one
HOME_CACHE = 100_000


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default (murmur2) partitioner: where a producer keyed by auction_id puts it."""
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


class States(Protocol):
    """Timer states by auction id (bytes), and the markers of auctions removed after their retention."""

    def get(self, key: bytes) -> TimerState | None: ...

    def put(self, key: bytes, state: TimerState) -> None: ...

    def expired(self, key: bytes) -> Expired | None: ...

    def forget(self, key: bytes, marker: Expired) -> None: ...

    def drop_expired(self, key: bytes) -> None: ...


@dataclass
class Outcome:
    records: list[outputs.Record] = field(default_factory=list)
    changes: list[fx.TimerChanged] = field(default_factory=list)
    reconcile: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # DLQ reasons


@dataclass
class TimerProcessor:
    states: States
    partitions: int
    max_event_bytes: int
    rules: Rules = NO_LATENESS
    _homes: dict[bytes, int] = field(default_factory=dict)

    def home(self, key: bytes) -> int:
        """The partition of `key`, cached: murmur2 in Python costs more than the fold."""
        home = self._homes.get(key)
        if home is None:
            if len(self._homes) >= HOME_CACHE:
                self._homes.clear()
            home = self._homes[key] = partition_for(key, self.partitions)
        return home

    def process(self, msg: Message) -> Outcome:
        if not msg.log_append_time:
            detail = (
                f"{msg.topic} stamps records with the producer's CreateTime; the worker folds by the broker's"
                " append time: set message.timestamp.type=LogAppendTime on the topic, then replay this record"
            )
            return self._reject(msg, "not_log_append_time", detail, None, derived_traceparent(msg.position))
        if msg.key is not None and len(msg.key) > MAX_KEY_BYTES:
            detail = f"a {len(msg.key)}-byte key cannot be an auction_id (at most {MAX_KEY_BYTES})"
            return self._reject(msg, "key_mismatch", detail, "key", derived_traceparent(msg.position))
        try:
            env = decode(msg, self.max_event_bytes)
        except InvalidEvent as exc:
            return self._reject(msg, exc.reason, exc.detail, exc.field, derived_traceparent(msg.position))
        token = current_trace_id.set(trace_id_of(env.traceparent))
        try:
            wanted = env.auction_id.encode()
            if msg.key != wanted:
                shown = msg.key[:MAX_KEY_BYTES] if msg.key is not None else None
                detail = f"message key {shown!r} is not the auction_id {env.auction_id!r}; key by auction_id"
                return self._reject(msg, "key_mismatch", detail, "key", env.traceparent)
            home = self.home(wanted)
            if home != msg.partition:
                detail = (
                    f"auction {env.auction_id!r} belongs on partition {home} of {self.partitions} "
                    "(murmur2 of the key); producers must use Kafka's default partitioner"
                )
                return self._reject(msg, "wrong_partition", detail, "key", env.traceparent)
            state = self.states.get(wanted)
            if state is None and not isinstance(env.data, ev.AuctionStarted):
                marker = self.states.expired(wanted)
                if marker is not None:
                    kept, effects = apply_expired(marker, env, self.rules)
                    if kept is None:
                        self.states.drop_expired(wanted)
                    return self._carry_out(msg, effects, env.traceparent)
            if state is not None and already_applied(state, env):
                REDELIVERED.inc()
            new_state, effects = apply(state, env, self.rules)
            if new_state is not None and new_state is not state:
                self.states.put(wanted, new_state)
            return self._carry_out(msg, effects, env.traceparent)
        finally:
            current_trace_id.reset(token)

    def internal_error(self, msg: Message, exc: BaseException) -> Outcome:
        """A bug met this record: dead-letter it (so it can be replayed once fixed) and go on."""
        log.exception("processing failed; message sent to the DLQ", extra={"topic": msg.topic, "offset": msg.offset})
        detail = f"{type(exc).__name__}: {exc}"
        return self._reject(msg, "internal_error", detail, None, derived_traceparent(msg.position))

    def _carry_out(self, msg: Message, effects: list[fx.Effect], traceparent: str) -> Outcome:
        out = Outcome()
        for effect in effects:
            match effect:
                case fx.TimerChanged():
                    out.records.append(outputs.timer_event(effect))
                    out.changes.append(effect)
                    TRANSITIONS.labels(effect.kind).inc()
                    log_change(effect)
                case fx.Audited():
                    if effect.reason == "late_bid":
                        LATE_BIDS.inc()
                    record_id = f"{effect.auction_id}:{msg.position}:{effect.action}"
                    out.records.append(outputs.audit(effect, msg.timestamp_ms, record_id))
                case fx.Tracked():
                    out.records.append(outputs.analytics(effect, msg.timestamp_ms))
                case fx.Rejected():
                    rejection = self._reject(msg, effect.reason, effect.detail, None, traceparent)
                    out.records += rejection.records
                    out.rejected += rejection.rejected
                case fx.ReconcileRequested():
                    out.reconcile.append(effect.auction_id)
                case fx.Forgotten():
                    marker = Expired("expired", effect.auction_id, effect.version, effect.ended_at_ms,
                                     effect.forgotten_at_ms)  # fmt: skip
                    self.states.forget(effect.auction_id.encode(), marker)
                case _:
                    assert_never(effect)
        return out

    def _reject(self, msg: Message, reason: str, detail: str, field_name: str | None, traceparent: str) -> Outcome:
        REJECTED.labels(reason).inc()
        log.warning(
            "input rejected to the DLQ: %s",
            detail[: outputs.DLQ_DETAIL_CHARS],
            extra={"reason": reason, "field": field_name, "topic": msg.topic, "partition": msg.partition,
                   "offset": msg.offset, "trace_id": trace_id_of(traceparent)},
        )  # fmt: skip
        record = outputs.dead_letter(
            reason=reason, detail=detail, field=field_name, topic=msg.topic, partition=msg.partition, offset=msg.offset,
            key=msg.key, value=msg.value, traceparent=traceparent, log_ms=msg.timestamp_ms,
        )  # fmt: skip
        return Outcome(records=[record], rejected=[reason])


def log_change(change: fx.TimerChanged) -> None:
    state = change.state
    log.info(
        "timer %s",
        change.kind,
        extra={"auction_id": state.auction_id, "version": state.version, "ends_at_ms": state.ends_at_ms,
               "cause_id": change.cause_id},
    )  # fmt: skip
