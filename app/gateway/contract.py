"""What the gateway accepts from its feed: TimerTick on auctions.timer.ticks and TimerEvent on
auctions.timer.events, as docs/asyncapi.yaml defines them.

Checked by hand rather than by a schema library: it runs for every record on the fan-out
path, and a dozen field checks cost a few microseconds. It is at least as strict as the
contract (tests/unit/test_feed_contract.py checks that whatever passes here passes the
contract's schema, and that what the worker writes passes here); fields the contract does not
name are allowed, so the worker may add some. Integers must be JSON integers (1, not 1.0).
"""

from __future__ import annotations

import re
from typing import Any

from streams import topics
from streams.decode import AUCTION_ID

TICK_TYPE = "com.marketplace.timer.tick"
EVENT_KINDS = frozenset({"registered", "started", "extended", "completed", "cancelled"})
EVENT_TYPES = frozenset(f"com.marketplace.timer.{kind}" for kind in EVENT_KINDS)
STATUSES = frozenset({"scheduled", "running", "ended", "cancelled"})
TRACE_ID = re.compile(r"[0-9a-f]{32}")
TRACEPARENT = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}")
MAX_EXTENSION_TOTAL_MS = 86_400_000

# PublicState: name -> (lowest value, or None for any integer; null allowed)
STATE_INTEGERS: dict[str, tuple[int | None, bool]] = {
    "version": (1, False),
    "starts_at_ms": (0, False),
    "original_ends_at_ms": (0, False),
    "ends_at_ms": (0, False),
    "soft_close_window_ms": (None, False),
    "extension_ms": (None, False),
    "max_extension_ms": (None, False),
    "extension_count": (0, False),
    "extension_total_ms": (0, False),
    "ended_at_ms": (None, True),
    "remaining_ms": (0, False),
    "server_time_ms": (0, False),
}


class Violation(Exception):
    """A record the contract does not allow: `reason` (a metric label) and the field at fault."""

    def __init__(self, reason: str, field: str) -> None:
        super().__init__(f"{reason}: {field}")
        self.reason = reason
        self.field = field


def _integer(data: dict[str, Any], name: str, low: int | None, nullable: bool = False) -> None:
    value = data[name]
    if value is None and nullable:
        return
    if type(value) is not int or (low is not None and value < low):
        raise Violation("invalid_value", name)


def _text(data: dict[str, Any], name: str, pattern: re.Pattern[str] | None = None) -> str:
    value = data[name]
    if type(value) is not str or (pattern is not None and not pattern.fullmatch(value)):
        raise Violation("invalid_value", name)
    return value


def _member(data: dict[str, Any], name: str, allowed: frozenset[str], reason: str = "invalid_value") -> None:
    value = data[name]
    if type(value) is not str or value not in allowed:
        raise Violation(reason, name)


def check_envelope(doc: Any) -> dict[str, Any]:
    """The CloudEvent around the data; returns the data object."""
    if type(doc) is not dict:
        raise Violation("bad_envelope", "$")
    try:
        if doc["specversion"] != "1.0":
            raise Violation("bad_envelope", "specversion")
        for name in ("type", "source", "time"):
            _text(doc, name)
        if not _text(doc, "id"):
            raise Violation("bad_envelope", "id")
    except KeyError as missing:
        raise Violation("missing_field", str(missing.args[0])) from None
    except Violation as exc:
        raise Violation("bad_envelope", exc.field) from None
    if "datacontenttype" in doc and doc["datacontenttype"] != "application/json":
        raise Violation("bad_envelope", "datacontenttype")
    if "traceparent" in doc and (type(doc["traceparent"]) is not str or not TRACEPARENT.fullmatch(doc["traceparent"])):
        raise Violation("bad_envelope", "traceparent")
    data = doc.get("data")
    if type(data) is not dict:
        raise Violation("bad_envelope", "data")
    return data


def check_state(data: dict[str, Any]) -> None:
    """PublicState, plus remaining_ms and server_time_ms (both messages require them)."""
    _text(data, "auction_id", AUCTION_ID)
    _member(data, "status", STATUSES)
    for name, (low, nullable) in STATE_INTEGERS.items():
        _integer(data, name, low, nullable)
    if data["extension_total_ms"] > MAX_EXTENSION_TOTAL_MS:
        raise Violation("invalid_value", "extension_total_ms")
    _text(data, "trace_id", TRACE_ID)


def check_tick(data: dict[str, Any]) -> None:
    _integer(data, "seq", 1)


def check_event(data: dict[str, Any]) -> None:
    _member(data, "kind", EVENT_KINDS)
    cause = data["cause"]
    if type(cause) is not dict or "id" not in cause or "type" not in cause:
        raise Violation("invalid_value", "cause")
    _integer(data, "previous_ends_at_ms", None, nullable=True)


def check(topic: str, doc: Any) -> dict[str, Any]:
    """The data of a record on `topic` that the contract allows; Violation otherwise."""
    data = check_envelope(doc)
    try:
        if topic == topics.TICKS:
            if doc["type"] != TICK_TYPE:
                raise Violation("unexpected_type", "type")
            check_tick(data)
        else:
            _member(doc, "type", EVENT_TYPES, "unexpected_type")
            check_event(data)
        check_state(data)
    except KeyError as missing:
        raise Violation("missing_field", str(missing.args[0])) from None
    return data
