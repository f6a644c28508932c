"""The thin outer layer around the fold: bytes in, table updated, records out.

`TimerProcessor.process` is what the Faust agent calls for each message; it is
plain code over a MutableMapping so functional tests drive it without Kafka.
It never raises for bad input: anything that cannot be applied becomes a DLQ
record with its reason, and the agent commits past it. A failure of the table or of
Kafka is not the message's fault: `apply_message` retries it instead of dead-lettering
a valid event.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import assert_never

from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from faust.exceptions import FaustError

from streams import effects as fx
from streams import outputs
from streams.clock import wall_ms
from streams.decode import decode
from streams.errors import InvalidEvent
from streams.fold import apply
from streams.metrics import COMPLETION_LATENESS, EVENTS, REJECTED, RETRIED, TRANSITIONS
from streams.state import TimerState, decode_state, encode_state
from streams.tracing import current_trace_id, new_traceparent, trace_id_of

log = logging.getLogger("auction_timer.processor")
RETRY_FIRST_S = 0.5
RETRY_MAX_S = 30.0
# Raised by the table (say, a changelog the consumer's metadata does not show yet) or by Kafka:
# the message is fine and must be applied once they recover.
NOT_THE_MESSAGES_FAULT = (FaustError, KafkaError)


def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default (murmur2) partitioner: where a producer keyed by auction_id puts it."""
    return (int(murmur2(key)) & 0x7FFFFFFF) % partitions


@dataclass(frozen=True, slots=True)
class Message:
    """One input message as it came off Kafka."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None


@dataclass
class Outcome:
    records: list[outputs.Record] = field(default_factory=list)
    changes: list[fx.TimerChanged] = field(default_factory=list)
    reconcile: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)  # DLQ reasons


@dataclass
class TimerProcessor:
    table: MutableMapping[bytes, bytes]
    partitions: int
    max_event_bytes: int
    clock: Callable[[], int] = wall_ms

    def process(self, msg: Message) -> Outcome:
        try:
            env = decode(msg.topic, msg.value, self.max_event_bytes)
        except InvalidEvent as exc:
            return self._reject(msg, exc.reason, exc.detail, exc.field, new_traceparent())
        token = current_trace_id.set(trace_id_of(env.traceparent))
        try:
            wanted = env.auction_id.encode()
            if msg.key != wanted:
                detail = f"message key {msg.key!r} is not the auction_id {env.auction_id!r}; key by auction_id"
                return self._reject(msg, "key_mismatch", detail, "key", env.traceparent)
            home = partition_for(wanted, self.partitions)
            if home != msg.partition:
                detail = (
                    f"auction {env.auction_id!r} belongs on partition {home} of {self.partitions} "
                    "(murmur2 of the key); producers must use Kafka's default partitioner"
                )
                return self._reject(msg, "wrong_partition", detail, "key", env.traceparent)
            raw_state = self.table.get(wanted)
            state = decode_state(raw_state) if raw_state else None
            new_state, effects = apply(state, env)
            if new_state is not None and new_state is not state:
                self.table[wanted] = encode_state(new_state)
            return self._carry_out(msg, effects, env.traceparent)
        finally:
            current_trace_id.reset(token)

    async def apply_message(self, msg: Message, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> Outcome:
        """`process`, for the agent: a failure of the table or of Kafka holds this message (and
        with it every partition of this worker, since the agent folds them all in one loop) and
        retries it with backoff; any other exception is a bug this message
        met, and the message is dead-lettered so the partition moves on."""
        EVENTS.labels(msg.topic).inc()
        delay = RETRY_FIRST_S
        while True:
            try:
                return self.process(msg)
            except NOT_THE_MESSAGES_FAULT as exc:
                RETRIED.inc()
                log.error(
                    "the table or Kafka failed; retrying the same message",
                    extra={"topic": msg.topic, "offset": msg.offset, "error": repr(exc), "retry_in_s": delay},
                )
                await sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            except Exception as exc:  # noqa: BLE001 - never crash the agent; the DLQ keeps the message
                return self._internal_error(msg, exc)

    def _internal_error(self, msg: Message, exc: BaseException) -> Outcome:
        """A bug met this message: dead-letter it (so it can be replayed once fixed) and go on."""
        log.exception("processing failed; message sent to the DLQ", extra={"topic": msg.topic, "offset": msg.offset})
        return self._reject(msg, "internal_error", f"{type(exc).__name__}: {exc}", None, new_traceparent())

    def _carry_out(self, msg: Message, effects: list[fx.Effect], traceparent: str) -> Outcome:
        now = self.clock()
        out = Outcome()
        for effect in effects:
            match effect:
                case fx.TimerChanged():
                    out.records.append(outputs.timer_event(effect, now))
                    out.changes.append(effect)
                    if not effect.redelivery:
                        TRANSITIONS.labels(effect.kind).inc()
                        if effect.kind == "completed":
                            COMPLETION_LATENESS.observe(max(0, now - effect.state.ends_at_ms))
                        log_change(effect)
                case fx.Audited():
                    out.records.append(outputs.audit(effect, now))
                case fx.Tracked():
                    out.records.append(outputs.analytics(effect, now))
                case fx.Rejected():
                    rejection = self._reject(msg, effect.reason, effect.detail, None, traceparent)
                    out.records += rejection.records
                    out.rejected += rejection.rejected
                case fx.ReconcileRequested():
                    out.reconcile.append(effect.auction_id)
                case _:
                    assert_never(effect)
        return out

    def _reject(self, msg: Message, reason: str, detail: str, field_name: str | None, traceparent: str) -> Outcome:
        REJECTED.labels(reason).inc()
        log.warning(
            "input rejected to the DLQ: %s",
            detail,
            extra={"reason": reason, "field": field_name, "topic": msg.topic, "partition": msg.partition,
                   "offset": msg.offset, "trace_id": trace_id_of(traceparent)},
        )  # fmt: skip
        record = outputs.dead_letter(
            reason=reason, detail=detail, field=field_name, topic=msg.topic, partition=msg.partition, offset=msg.offset,
            key=msg.key, value=msg.value, traceparent=traceparent, now_ms=self.clock(), max_bytes=self.max_event_bytes,
        )  # fmt: skip
        return Outcome(records=[record], rejected=[reason])


def log_change(change: fx.TimerChanged) -> None:
    state: TimerState = change.state
    log.info(
        "timer %s",
        change.kind,
        extra={"auction_id": state.auction_id, "version": state.version, "ends_at_ms": state.ends_at_ms,
               "cause_id": change.cause_id},
    )  # fmt: skip
