"""Builders for input events: Envelopes for the fold's unit tests, Records for Kafka tests."""

from __future__ import annotations

import itertools
import time
import uuid
from typing import Any

import orjson

from streams import events as ev
from streams import outputs, topics
from streams.tracing import new_traceparent

POLICY = ev.Policy(soft_close_window_ms=2_000, extension_ms=2_000, max_extension_ms=10_000)
T0 = 1_800_000_000_000  # a fixed instant for pure tests


def now_ms() -> int:
    return time.time_ns() // 1_000_000


_offsets = itertools.count()


def envelope(
    payload: ev.Payload,
    time_ms: int | None = None,
    event_id: str | None = None,
    log_ms: int | None = None,
    offset: int | None = None,
) -> ev.Envelope:
    """An input as the fold sees it. The log took it at `log_ms` (default: its `time_ms`, else T0),
    at a fresh offset of its topic unless `offset` says otherwise."""
    time_ms = time_ms if time_ms is not None else T0
    return ev.Envelope(
        id=event_id or uuid.uuid4().hex,
        type=ev.TYPE_OF[type(payload)],
        source="tests",
        time_ms=time_ms,
        traceparent=new_traceparent(),
        data=payload,
        log_ms=log_ms if log_ms is not None else time_ms,
        topic_index=topics.INPUT_TOPICS.index(outputs.TOPIC_OF[type(payload)]),
        offset=offset if offset is not None else next(_offsets),
    )


def started(auction_id: str, starts: int, ends: int, policy: ev.Policy = POLICY) -> ev.AuctionStarted:
    return ev.AuctionStarted(auction_id, starts, ends, policy, "maker-1")


def bid(auction_id: str, placed: int, bid_id: str | None = None) -> ev.BidPlaced:
    return ev.BidPlaced(auction_id, bid_id or uuid.uuid4().hex[:12], "bidder-1", "12.50", placed)


def record(payload: ev.Payload, event_id: str | None = None, time_ms: int | None = None) -> outputs.Record:
    """What an upstream producer writes for `payload`, keyed by auction_id."""
    return outputs.input_record(
        payload, event_id or uuid.uuid4().hex, time_ms if time_ms is not None else now_ms(), new_traceparent(), "tests"
    )


def raw_event(topic_type: str, data: dict[str, Any], **envelope_fields: Any) -> bytes:
    doc = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "type": topic_type,
        "source": "tests",
        "time": "2026-11-30T00:00:00Z",
        "data": data,
        **envelope_fields,
    }
    return orjson.dumps(doc)
