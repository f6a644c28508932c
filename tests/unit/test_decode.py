"""Decoding validates everything the contract lists and names the field that is wrong."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from streams import events as ev
from streams import topics
from streams.decode import decode, parse_time_ms
from streams.errors import InvalidEvent
from streams.message import Message
from tests.support.events import raw_event

LOG_MS = 1_800_000_050_000  # when the log took the test's records (the bid was placed then)


def inbound(topic: str, raw: bytes | None, log_ms: int = LOG_MS) -> Message:
    return Message(topic, 0, 7, log_ms, b"auction-1", raw)


GOOD_START: dict[str, Any] = {
    "auction_id": "auction-1",
    "starts_at_ms": 1_800_000_000_000,
    "ends_at_ms": 1_800_000_060_000,
    "policy": {"soft_close_window_ms": 10_000, "extension_ms": 30_000, "max_extension_ms": 3_600_000},
    "maker_id": "maker-9",
}
GOOD_BID: dict[str, Any] = {
    "auction_id": "auction-1",
    "bid_id": "bid-1",
    "bidder_id": "user-1",
    "amount": "120.50",
    "placed_at_ms": 1_800_000_050_000,
}


def with_(base: dict[str, Any], **changes: Any) -> dict[str, Any]:
    out = orjson.loads(orjson.dumps(base))
    for dotted, value in changes.items():
        target = out
        *path, last = dotted.split("__")
        for part in path:
            target = target[part]
        if value is ...:
            del target[last]
        else:
            target[last] = value
    return out


def test_valid_auction_started_decodes_to_dataclasses() -> None:
    env = decode(inbound(topics.AUCTION_STARTED, raw_event(ev.AUCTION_STARTED, GOOD_START)), 65536)
    assert isinstance(env.data, ev.AuctionStarted)
    assert env.data.policy == ev.Policy(10_000, 30_000, 3_600_000)
    assert env.time_ms == 1_795_996_800_000
    assert env.traceparent.startswith("00-")  # derived: upstream sent none
    assert (env.log_ms, env.topic_index, env.offset) == (LOG_MS, 0, 7)


def test_upstream_traceparent_is_kept() -> None:
    tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    env = decode(inbound(topics.BID_PLACED, raw_event(ev.BID_PLACED, GOOD_BID, traceparent=tp)), 65536)
    assert env.traceparent == tp


@pytest.mark.parametrize(
    ("topic", "kind", "data", "reason", "field"),
    [
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, auction_id="bad id!"),
            "bad_auction_id",
            "data.auction_id",
        ),
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, auction_id="x" * 65),
            "bad_auction_id",
            "data.auction_id",
        ),
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, auction_id=""),
            "bad_auction_id",
            "data.auction_id",
        ),
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, starts_at_ms=...),
            "missing_field",
            "data.starts_at_ms",
        ),
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, starts_at_ms="soon"),
            "wrong_type",
            "data.starts_at_ms",
        ),
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, starts_at_ms=True),
            "wrong_type",
            "data.starts_at_ms",
        ),
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, starts_at_ms=1_800_000_000),
            "invalid_value",
            "data.starts_at_ms",
        ),
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, ends_at_ms=1_800_000_000_000),
            "ends_before_starts",
            "data.ends_at_ms",
        ),
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, policy__extension_ms=900_001),
            "policy_over_cap",
            "data.policy.extension_ms",
        ),
        (
            topics.AUCTION_STARTED,
            ev.AUCTION_STARTED,
            with_(GOOD_START, policy__max_extension_ms=86_400_001),
            "policy_over_cap",
            "data.policy.max_extension_ms",
        ),
        (topics.AUCTION_STARTED, ev.AUCTION_STARTED, with_(GOOD_START, policy=...), "missing_field", "data.policy"),
        (topics.BID_PLACED, ev.BID_PLACED, with_(GOOD_BID, amount="12,50"), "invalid_value", "data.amount"),
        (topics.BID_PLACED, ev.BID_PLACED, with_(GOOD_BID, amount=12.5), "wrong_type", "data.amount"),
        (topics.BID_PLACED, ev.BID_PLACED, with_(GOOD_BID, bid_id=...), "missing_field", "data.bid_id"),
        (topics.AUCTION_STARTED, ev.BID_PLACED, GOOD_BID, "unexpected_type", "type"),
    ],
)
def test_invalid_events_name_reason_and_field(
    topic: str, kind: str, data: dict[str, Any], reason: str, field: str
) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topic, raw_event(kind, data)), 65536)
    assert (caught.value.reason, caught.value.field) == (reason, field)
    assert field in str(caught.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (None, "not_json"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "bad_envelope"),
        (orjson.dumps({"specversion": "0.3"}), "bad_envelope"),
    ],
)
def test_malformed_messages(raw: bytes | None, reason: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topics.BID_PLACED, raw), 65536)
    assert caught.value.reason == reason


def test_bad_time_and_content_type() -> None:
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topics.BID_PLACED, raw_event(ev.BID_PLACED, GOOD_BID, time="yesterday")), 65536)
    assert (caught.value.reason, caught.value.field) == ("bad_envelope", "time")
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topics.BID_PLACED, raw_event(ev.BID_PLACED, GOOD_BID, time="2026-11-30T00:00:00")), 65536)
    assert caught.value.field == "time"  # no zone
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topics.BID_PLACED, raw_event(ev.BID_PLACED, GOOD_BID, datacontenttype="text/xml")), 65536)
    assert caught.value.field == "datacontenttype"


@pytest.mark.parametrize(
    "value", ["20261130T000000Z", "2026-W48-1T00:00:00Z", "2026-11-30T00:00Z", "2026-11-30T00:00:00+0100", "2026-11-30"]
)
def test_time_must_be_rfc3339_not_any_iso8601(value: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        parse_time_ms(value)
    assert caught.value.field == "time"


def test_rfc3339_times_with_any_zone_parse_exactly() -> None:
    assert parse_time_ms("2026-11-30T00:00:00Z") == 1_795_996_800_000
    assert parse_time_ms("2026-11-30T01:00:00.25+01:00") == parse_time_ms("2026-11-30T00:00:00.250Z")
    assert parse_time_ms("2026-11-30t00:00:00z") == parse_time_ms("2026-11-30T00:00:00Z")


def test_oversized_message_is_rejected_before_parsing() -> None:
    raw = raw_event(ev.BID_PLACED, GOOD_BID, padding="x" * 5000)
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topics.BID_PLACED, raw), 4096)
    assert caught.value.reason == "oversized"


@pytest.mark.parametrize("bad", ["auction-1\n", "auction-1\r", "\nauction-1", "auction 1", "auction-1/.."])
def test_ids_match_in_full(bad: str) -> None:
    """`$` also matches before a final newline; ids must match the whole pattern."""
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topics.BID_PLACED, raw_event(ev.BID_PLACED, with_(GOOD_BID, auction_id=bad))), 65536)
    assert (caught.value.reason, caught.value.field) == ("bad_auction_id", "data.auction_id")
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topics.BID_PLACED, raw_event(ev.BID_PLACED, with_(GOOD_BID, bid_id="b-1\n"))), 65536)
    assert (caught.value.reason, caught.value.field) == ("invalid_value", "data.bid_id")


def test_upstream_times_are_bounded_by_the_log_time() -> None:
    """Nothing may come from more than 2 s after the log took it; a bid may not claim to be older than 60 s."""
    placed = GOOD_BID["placed_at_ms"]
    ok = decode(inbound(topics.BID_PLACED, raw_event(ev.BID_PLACED, GOOD_BID), log_ms=placed - 2_000), 65536)
    assert isinstance(ok.data, ev.BidPlaced) and ok.log_ms == placed - 2_000
    for log_ms, reason in [(placed - 2_001, "placed_in_future"), (placed + 60_001, "placed_too_long_ago")]:
        with pytest.raises(InvalidEvent) as caught:
            decode(inbound(topics.BID_PLACED, raw_event(ev.BID_PLACED, GOOD_BID), log_ms=log_ms), 65536)
        assert (caught.value.reason, caught.value.field) == (reason, "data.placed_at_ms")
    future = raw_event(ev.AUCTION_CANCELLED, {"auction_id": "auction-1", "reason": "r", "actor": "a"},
                       time="9999-12-31T00:00:00Z")  # fmt: skip
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topics.AUCTION_CANCELLED, future), 65536)
    assert (caught.value.reason, caught.value.field) == ("time_in_future", "time")
    command = {"auction_id": "auction-1", "version": 1, "fired_at_ms": LOG_MS + 2_001}
    with pytest.raises(InvalidEvent) as caught:
        decode(inbound(topics.COMMANDS, raw_event(ev.EXPIRE_TIMER, command)), 65536)
    assert (caught.value.reason, caught.value.field) == ("time_in_future", "data.fired_at_ms")


def test_a_missing_traceparent_is_derived_from_the_position_not_random() -> None:
    raw = raw_event(ev.BID_PLACED, GOOD_BID)
    first = decode(inbound(topics.BID_PLACED, raw), 65536).traceparent
    assert decode(inbound(topics.BID_PLACED, raw), 65536).traceparent == first
    elsewhere = Message(topics.BID_PLACED, 0, 8, LOG_MS, b"auction-1", raw)
    assert decode(elsewhere, 65536).traceparent != first
