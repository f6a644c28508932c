"""Bytes off Kafka -> a validated Envelope, or InvalidEvent naming the field and the reason.

Reason codes (stable; they label the rejected-events metric and DLQ records):
oversized, not_json, bad_envelope, missing_field, wrong_type, invalid_value,
unexpected_type, bad_auction_id, ends_before_starts, policy_over_cap,
time_in_future, placed_in_future, placed_too_long_ago (and, from the processor: key_mismatch,
wrong_partition, not_log_append_time, unknown_auction, conflicting_registration, internal_error).

Times that come from upstream are bounded by the record's broker time (`log_ms`), the only
clock the fold trusts: nothing may claim to come from more than FUTURE_TOLERANCE_MS after the
log took it, and a bid may not claim to have been placed more than MAX_BID_DELAY_MS before.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, TypeVar

import orjson

from streams import events as ev
from streams import topics
from streams.errors import InvalidEvent
from streams.message import Message
from streams.tracing import derived_traceparent, valid_traceparent

AUCTION_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
REF_ID = re.compile(r"[A-Za-z0-9_.:@/-]{1,128}")
AMOUNT = re.compile(r"(0|[1-9][0-9]{0,17})(\.[0-9]{1,8})?")
# Instants must fall in 2001..2286 (13-digit epoch ms): catches seconds-for-millis mistakes.
MIN_MS, MAX_MS = 1_000_000_000_000, 9_999_999_999_999
MAX_DURATION_MS = 366 * 24 * 3600 * 1000
# Upstream clocks may run a little ahead of the broker's; further ahead is a broken clock.
FUTURE_TOLERANCE_MS = 2_000
# A bid the upstream service held back this long is no longer evidence of when it was placed.
MAX_BID_DELAY_MS = 60_000
# RFC 3339 date-time with a zone; fromisoformat alone also takes ISO 8601's other forms
# (basic "20261130T1010Z", week dates), which the contract does not allow.
RFC3339 = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?([Zz]|[+-][0-9]{2}:[0-9]{2})"
)

EXPECTED_TYPES: dict[str, tuple[str, ...]] = {
    topics.AUCTION_STARTED: (ev.AUCTION_STARTED,),
    topics.BID_PLACED: (ev.BID_PLACED,),
    topics.AUCTION_CANCELLED: (ev.AUCTION_CANCELLED,),
    topics.COMMANDS: (ev.EXPIRE_TIMER, ev.START_TIMER, ev.RECONCILE, ev.FORGET_TIMER),
}

T = TypeVar("T")


def _field(obj: Mapping[str, Any], name: str, kind: type[T], where: str = "") -> T:
    path = f"{where}{name}"
    if name not in obj or obj[name] is None:
        raise InvalidEvent("missing_field", f"{path} is required", path)
    value = obj[name]
    # bool is an int in Python; a JSON true is never a valid count or instant.
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise InvalidEvent("wrong_type", f"{path} must be {kind.__name__}, got {type(value).__name__}", path)
    return value


def _text(obj: Mapping[str, Any], name: str, pattern: re.Pattern[str], where: str = "data.") -> str:
    value = _field(obj, name, str, where)
    if not pattern.fullmatch(value):
        reason = "bad_auction_id" if name == "auction_id" else "invalid_value"
        raise InvalidEvent(reason, f"{where}{name}={value[:80]!r} does not match {pattern.pattern}", f"{where}{name}")
    return value


def _instant(obj: Mapping[str, Any], name: str, where: str = "data.") -> int:
    value = _field(obj, name, int, where)
    if not MIN_MS <= value <= MAX_MS:
        raise InvalidEvent("invalid_value", f"{where}{name}={value} is not epoch milliseconds", f"{where}{name}")
    return value


def _bounded_int(obj: Mapping[str, Any], name: str, low: int, high: int, where: str, reason: str) -> int:
    value = _field(obj, name, int, where)
    if not low <= value <= high:
        raise InvalidEvent(reason, f"{where}{name}={value} must be between {low} and {high}", f"{where}{name}")
    return value


def _free_text(obj: Mapping[str, Any], name: str, limit: int = 500) -> str:
    value = _field(obj, name, str, "data.")
    if not 0 < len(value) <= limit:
        raise InvalidEvent("invalid_value", f"data.{name} must be 1-{limit} characters", f"data.{name}")
    return value


def _policy(data: Mapping[str, Any]) -> ev.Policy:
    raw = _field(data, "policy", dict, "data.")
    where = "data.policy."
    return ev.Policy(
        soft_close_window_ms=_bounded_int(
            raw, "soft_close_window_ms", 0, ev.MAX_EXTENSION_TOTAL_MS, where, "invalid_value"
        ),
        extension_ms=_bounded_int(raw, "extension_ms", 1, ev.MAX_EXTENSION_STEP_MS, where, "policy_over_cap"),
        max_extension_ms=_bounded_int(raw, "max_extension_ms", 0, ev.MAX_EXTENSION_TOTAL_MS, where, "policy_over_cap"),
    )


def _auction_started(data: Mapping[str, Any], log_ms: int) -> ev.AuctionStarted:
    event = ev.AuctionStarted(
        auction_id=_text(data, "auction_id", AUCTION_ID),
        starts_at_ms=_instant(data, "starts_at_ms"),
        ends_at_ms=_instant(data, "ends_at_ms"),
        policy=_policy(data),
        maker_id=_text(data, "maker_id", REF_ID),
    )
    if event.ends_at_ms <= event.starts_at_ms:
        raise InvalidEvent("ends_before_starts", "data.ends_at_ms must be after data.starts_at_ms", "data.ends_at_ms")
    if event.ends_at_ms - event.starts_at_ms > MAX_DURATION_MS:
        raise InvalidEvent("invalid_value", "an auction may last at most 366 days", "data.ends_at_ms")
    return event


def _bid_placed(data: Mapping[str, Any], log_ms: int) -> ev.BidPlaced:
    bid = ev.BidPlaced(
        auction_id=_text(data, "auction_id", AUCTION_ID),
        bid_id=_text(data, "bid_id", REF_ID),
        bidder_id=_text(data, "bidder_id", REF_ID),
        amount=_text(data, "amount", AMOUNT),
        placed_at_ms=_instant(data, "placed_at_ms"),
    )
    if bid.placed_at_ms > log_ms + FUTURE_TOLERANCE_MS:
        detail = f"data.placed_at_ms={bid.placed_at_ms} is {bid.placed_at_ms - log_ms} ms after the log took the bid"
        raise InvalidEvent("placed_in_future", detail, "data.placed_at_ms")
    if bid.placed_at_ms < log_ms - MAX_BID_DELAY_MS:
        detail = f"data.placed_at_ms={bid.placed_at_ms} is {log_ms - bid.placed_at_ms} ms before the log took the bid"
        raise InvalidEvent("placed_too_long_ago", detail, "data.placed_at_ms")
    return bid


def _auction_cancelled(data: Mapping[str, Any], log_ms: int) -> ev.AuctionCancelled:
    return ev.AuctionCancelled(
        auction_id=_text(data, "auction_id", AUCTION_ID),
        reason=_free_text(data, "reason"),
        actor=_text(data, "actor", REF_ID),
    )


def _fired_at(data: Mapping[str, Any], log_ms: int) -> int:
    fired = _instant(data, "fired_at_ms")
    if fired > log_ms + FUTURE_TOLERANCE_MS:
        raise InvalidEvent(
            "time_in_future", f"data.fired_at_ms={fired} is after the log took the command", "data.fired_at_ms"
        )
    return fired


def _expire(data: Mapping[str, Any], log_ms: int) -> ev.ExpireTimer:
    return ev.ExpireTimer(
        auction_id=_text(data, "auction_id", AUCTION_ID),
        version=_bounded_int(data, "version", 1, 2**53, "data.", "invalid_value"),
        fired_at_ms=_fired_at(data, log_ms),
    )


def _start(data: Mapping[str, Any], log_ms: int) -> ev.StartTimer:
    return ev.StartTimer(
        auction_id=_text(data, "auction_id", AUCTION_ID),
        version=_bounded_int(data, "version", 1, 2**53, "data.", "invalid_value"),
        fired_at_ms=_fired_at(data, log_ms),
    )


def _forget(data: Mapping[str, Any], log_ms: int) -> ev.ForgetTimer:
    return ev.ForgetTimer(
        auction_id=_text(data, "auction_id", AUCTION_ID),
        version=_bounded_int(data, "version", 1, 2**53, "data.", "invalid_value"),
        fired_at_ms=_fired_at(data, log_ms),
    )


def _reconcile(data: Mapping[str, Any], log_ms: int) -> ev.Reconcile:
    return ev.Reconcile(
        auction_id=_text(data, "auction_id", AUCTION_ID), requested_by=_free_text(data, "requested_by", 128)
    )


PAYLOADS: dict[str, Callable[[Mapping[str, Any], int], ev.Payload]] = {
    ev.AUCTION_STARTED: _auction_started,
    ev.BID_PLACED: _bid_placed,
    ev.AUCTION_CANCELLED: _auction_cancelled,
    ev.EXPIRE_TIMER: _expire,
    ev.START_TIMER: _start,
    ev.FORGET_TIMER: _forget,
    ev.RECONCILE: _reconcile,
}


def parse_time_ms(value: str) -> int:
    """RFC 3339 -> epoch ms; raises InvalidEvent when it is not one with a zone."""
    try:
        parsed = datetime.fromisoformat(value.upper()) if RFC3339.fullmatch(value) else None
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise InvalidEvent("bad_envelope", f"time={value[:40]!r} is not RFC 3339 with a zone", "time")
    return int(parsed.timestamp() * 1000)


def decode(msg: Message, max_bytes: int) -> ev.Envelope:
    """Validate one input record completely, or raise InvalidEvent."""
    raw = msg.value
    if raw is None:
        raise InvalidEvent("not_json", "the message has no value (tombstone)")
    if len(raw) > max_bytes:
        raise InvalidEvent("oversized", f"{len(raw)} bytes is over the {max_bytes}-byte limit")
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent("not_json", f"not JSON: {str(exc)[:200]}") from None
    if not isinstance(doc, dict):
        raise InvalidEvent("bad_envelope", "a CloudEvent must be a JSON object")
    if doc.get("specversion") != "1.0":
        raise InvalidEvent("bad_envelope", "specversion must be '1.0'", "specversion")
    event_id = _text(doc, "id", REF_ID, "")
    event_type = _field(doc, "type", str)
    expected = EXPECTED_TYPES.get(msg.topic)
    if expected is None:
        raise InvalidEvent("unexpected_type", f"{msg.topic} is not an input topic")
    if event_type not in expected:
        raise InvalidEvent("unexpected_type", f"type {event_type[:80]!r} does not belong on {msg.topic}", "type")
    source = _field(doc, "source", str)
    if not 0 < len(source) <= 256:
        raise InvalidEvent("bad_envelope", "source must be 1-256 characters", "source")
    time_ms = parse_time_ms(_field(doc, "time", str))
    if time_ms > msg.timestamp_ms + FUTURE_TOLERANCE_MS:
        raise InvalidEvent(
            "time_in_future", f"time is {time_ms - msg.timestamp_ms} ms after the log took the event", "time"
        )
    content_type = doc.get("datacontenttype", "application/json")
    if content_type != "application/json":
        raise InvalidEvent("bad_envelope", "datacontenttype must be application/json", "datacontenttype")
    traceparent = doc.get("traceparent")
    if not valid_traceparent(traceparent):
        traceparent = derived_traceparent(msg.position)  # upstream sent none (or garbage): start a trace here
    data = _field(doc, "data", dict)
    payload = PAYLOADS[event_type](data, msg.timestamp_ms)
    return ev.Envelope(
        event_id, event_type, source, time_ms, str(traceparent), payload,
        log_ms=msg.timestamp_ms, topic_index=topics.INPUT_TOPICS.index(msg.topic), offset=msg.offset,
    )  # fmt: skip
