"""Effects and ticks as Kafka records: CloudEvents for our topics, Segment Track for analytics.

Every record the fold causes has a deterministic id, and its content is a function of the
input record and the state alone (times are log times, trace spans are derived, never
random): a record published again after a crash is byte for byte the first one, so a
consumer can drop a repeat by id. Ids: timer events `{auction}:v{version}`
(`{auction}:completed`, `{auction}:cancelled` for the terminal ones), audit
`{auction}:{topic}:{partition}:{offset}:{action}` (the input that caused it), analytics
`{auction}:{event}:v{version}`, DLQ `{topic}:{partition}:{offset}`. Ticks are the exception:
they carry the worker's clock and are sent again, not repeated.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from streams import events as ev
from streams import json_bytes, topics
from streams.effects import Audited, TimerChanged, Tracked
from streams.state import TimerState
from streams.tracing import child_traceparent

SOURCE = "urn:auction-timer:worker"
TICK_TYPE = "com.marketplace.timer.tick"
AUDIT_TYPE = "com.marketplace.timer.audit"
DLQ_TYPE = "com.marketplace.timer.dead_letter"
TIMER_EVENT_TYPE = "com.marketplace.timer.{kind}"


@dataclass(frozen=True, slots=True)
class Record:
    topic: str
    key: bytes
    value: bytes


MAX_RFC3339_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z


def rfc3339(ms: int) -> str:
    # Clamped: a producer may stamp a record with any 64-bit time, and its DLQ record must still be written.
    ms = min(max(ms, 0), MAX_RFC3339_MS)
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def cloudevent(
    event_id: str, event_type: str, time_ms: int, traceparent: str, data: dict[str, Any], source: str = SOURCE
) -> bytes:
    return json_bytes.dumps(
        {
            "specversion": "1.0",
            "id": event_id,
            "type": event_type,
            "source": source,
            "time": rfc3339(time_ms),
            "datacontenttype": "application/json",
            "traceparent": traceparent,
            "data": data,
        }
    )


def timer_event_id(change: TimerChanged) -> str:
    state = change.state
    if change.kind in ("completed", "cancelled"):
        return f"{state.auction_id}:{change.kind}"
    return f"{state.auction_id}:v{state.version}"


def timer_event(change: TimerChanged) -> Record:
    """The change as of the log time of the input that made it (`state.updated_at_ms`)."""
    state = change.state
    at_ms = state.updated_at_ms
    data = {
        **state.public(),
        "kind": change.kind,
        "cause": {"id": change.cause_id, "type": change.cause_type},
        "previous_ends_at_ms": change.previous_ends_at_ms,
        "remaining_ms": state.remaining_ms(at_ms),
        "server_time_ms": at_ms,
    }
    event_id = timer_event_id(change)
    value = cloudevent(
        event_id, TIMER_EVENT_TYPE.format(kind=change.kind), at_ms, child_traceparent(state.traceparent, event_id), data
    )
    return Record(topics.TIMER_EVENTS, state.auction_id.encode(), value)


@dataclass(frozen=True, slots=True)
class TimerTick:
    """auctions.timer.ticks: the whole authoritative state a client needs, with the server's clock."""

    state: TimerState
    seq: int
    server_time_ms: int

    def data(self) -> dict[str, Any]:
        remaining = self.state.remaining_ms(self.server_time_ms)
        return {
            **self.state.public(),
            "seq": self.seq,
            "remaining_ms": remaining,
            "server_time_ms": self.server_time_ms,
        }


def tick(state: TimerState, seq: int, now_ms: int) -> Record:
    event = TimerTick(state, seq, now_ms)
    tick_id = f"{state.auction_id}:v{state.version}:t{now_ms}"
    value = cloudevent(tick_id, TICK_TYPE, now_ms, child_traceparent(state.traceparent, tick_id), event.data())
    return Record(topics.TICKS, state.auction_id.encode(), value)


def audit(entry: Audited, at_ms: int, record_id: str, source: str = SOURCE) -> Record:
    """`record_id` names the entry; for the fold's entries it is the causing input's position."""
    data = {
        "action": entry.action,
        "auction_id": entry.auction_id,
        "version": entry.version,
        "reason": entry.reason,
        "cause": {"id": entry.cause_id, "type": entry.cause_type},
        "trace_id": entry.traceparent[3:35],
        "detail": entry.detail,
        "recorded_at_ms": at_ms,
    }
    value = cloudevent(record_id, AUDIT_TYPE, at_ms, entry.traceparent, data, source)
    return Record(topics.AUDIT, entry.auction_id.encode(), value)


def analytics(tracked: Tracked, at_ms: int) -> Record:
    """A Segment Track call (https://segment.com/docs/connections/spec/track/)."""
    doc = {
        "type": "track",
        "event": tracked.event,
        "anonymousId": f"auction:{tracked.auction_id}",
        "messageId": f"{tracked.auction_id}:{tracked.event}:v{tracked.version}",
        "timestamp": rfc3339(at_ms),
        "properties": tracked.properties,
        "context": {"traceparent": tracked.traceparent, "library": {"name": "auction-timer", "version": "0.1.0"}},
    }
    return Record(topics.ANALYTICS, tracked.auction_id.encode(), json_bytes.dumps(doc))


# What a DLQ record keeps of the input: enough to read what was wrong, never so much that the
# record (JSON-escaped, up to six bytes per input byte) nears the producer's 1 MB limit.
DLQ_EXCERPT_BYTES = 16 * 1024
DLQ_KEY_CHARS = 256
DLQ_DETAIL_CHARS = 1_000


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """auctions.timer.dlq: an input that could not be applied, why, and where it came from.
    `value`/`value_base64` hold at most DLQ_EXCERPT_BYTES of the original (`truncated` then
    says so; `size` and `sha256` describe the whole, which topic/partition/offset find)."""

    reason: str
    detail: str
    field: str | None
    topic: str
    partition: int
    offset: int
    key: str | None
    value: str | None  # the original as text, when it was UTF-8
    value_base64: str | None  # otherwise base64
    truncated: bool
    size: int
    sha256: str
    trace_id: str
    received_at_ms: int  # the broker's append time of the input


def dead_letter(
    *,
    reason: str,
    detail: str,
    field: str | None,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
    traceparent: str,
    log_ms: int,
) -> Record:
    """The unusable input with why, bounded whatever the input's size."""
    whole = value or b""
    original = whole[:DLQ_EXCERPT_BYTES]
    try:
        text: str | None = original.decode()
        encoded = None
    except UnicodeDecodeError:
        text, encoded = None, base64.b64encode(original).decode()
    shown_key = None if key is None else key[:DLQ_KEY_CHARS].decode(errors="replace")
    letter = DeadLetter(
        reason=reason,
        detail=detail[:DLQ_DETAIL_CHARS],
        field=field,
        topic=topic,
        partition=partition,
        offset=offset,
        key=shown_key,
        value=text,
        value_base64=encoded,
        truncated=len(whole) > len(original) or (key is not None and len(key) > DLQ_KEY_CHARS),
        size=len(whole),
        sha256=hashlib.sha256(whole).hexdigest(),
        trace_id=traceparent[3:35],
        received_at_ms=log_ms,
    )
    position = f"{topic}:{partition}:{offset}"
    dlq_key = key[:DLQ_KEY_CHARS] if key is not None else position.encode()
    value_out = cloudevent(position, DLQ_TYPE, log_ms, traceparent, asdict(letter))
    return Record(topics.DLQ, dlq_key, value_out)


TOPIC_OF: dict[type, str] = {
    ev.AuctionStarted: topics.AUCTION_STARTED,
    ev.BidPlaced: topics.BID_PLACED,
    ev.AuctionCancelled: topics.AUCTION_CANCELLED,
    ev.ExpireTimer: topics.COMMANDS,
    ev.StartTimer: topics.COMMANDS,
    ev.Reconcile: topics.COMMANDS,
    ev.ForgetTimer: topics.COMMANDS,
}


def input_record(payload: ev.Payload, event_id: str, now_ms: int, traceparent: str, source: str) -> Record:
    """An input event as its producer writes it: the scheduler's and gateway's commands, the
    demo's and tests' upstream events. Keyed by auction_id, as every producer must."""
    value = cloudevent(event_id, ev.TYPE_OF[type(payload)], now_ms, traceparent, asdict(payload), source)
    return Record(TOPIC_OF[type(payload)], payload.auction_id.encode(), value)
