"""The outer layer in-process: decode, fold, table, and the records it would publish."""

from __future__ import annotations

import orjson
from faust.exceptions import PartitionsMismatch

from streams import events as ev
from streams import topics
from streams.processor import Message, TimerProcessor, partition_for
from streams.state import decode_state
from tests.support.events import POLICY, T0, record

PARTITIONS = 8


def processor() -> TimerProcessor:
    return TimerProcessor(table={}, partitions=PARTITIONS, max_event_bytes=65536, clock=lambda: T0 + 123)


def message(payload: ev.Payload, offset: int = 0, event_id: str | None = None) -> Message:
    rec = record(payload, event_id=event_id, time_ms=T0)
    return Message(rec.topic, partition_for(rec.key, PARTITIONS), offset, rec.key, rec.value)


def by_topic(records: list) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r.topic, []).append(orjson.loads(r.value))
    return out


def test_registration_updates_the_table_and_publishes_with_the_input_trace() -> None:
    proc = processor()
    msg = message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1"))
    upstream_trace = orjson.loads(msg.value or b"")["traceparent"][3:35]
    outcome = proc.process(msg)
    state = decode_state(proc.table[b"a1"])
    assert (state.version, state.ends_at_ms) == (1, T0 + 60_000)
    out = by_topic(outcome.records)
    assert set(out) == {topics.TIMER_EVENTS, topics.AUDIT, topics.ANALYTICS}
    assert out[topics.TIMER_EVENTS][0]["id"] == "a1:v1"
    assert out[topics.TIMER_EVENTS][0]["traceparent"][3:35] == upstream_trace
    assert out[topics.AUDIT][0]["data"]["trace_id"] == upstream_trace
    assert out[topics.ANALYTICS][0]["event"] == "auction_timer_started"
    assert out[topics.ANALYTICS][0]["properties"]["trace_id"] == upstream_trace
    assert [c.kind for c in outcome.changes] == ["registered"]


def test_completion_has_the_deterministic_id() -> None:
    proc = processor()
    proc.process(message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1")))
    outcome = proc.process(message(ev.ExpireTimer("a1", 1, T0 + 60_001)))
    assert by_topic(outcome.records)[topics.TIMER_EVENTS][0]["id"] == "a1:completed"


def test_garbage_goes_to_the_dlq_with_reason_and_position() -> None:
    proc = processor()
    outcome = proc.process(Message(topics.BID_PLACED, 3, 41, b"a1", b"\xff\xfenot json"))
    [dlq] = by_topic(outcome.records)[topics.DLQ]
    assert dlq["id"] == f"{topics.BID_PLACED}:3:41"
    assert dlq["data"]["reason"] == "not_json"
    assert (dlq["data"]["topic"], dlq["data"]["partition"], dlq["data"]["offset"]) == (topics.BID_PLACED, 3, 41)
    assert dlq["data"]["value"] is None and dlq["data"]["value_base64"]
    assert proc.table == {}


def test_unknown_auction_bid_is_dead_lettered_and_audited() -> None:
    proc = processor()
    outcome = proc.process(message(ev.BidPlaced("ghost", "b1", "u1", "1", T0)))
    out = by_topic(outcome.records)
    assert out[topics.DLQ][0]["data"]["reason"] == "unknown_auction"
    assert out[topics.AUDIT][0]["data"]["reason"] == "unknown_auction"


def test_key_must_be_the_auction_id() -> None:
    proc = processor()
    rec = record(ev.BidPlaced("a1", "b1", "u1", "1", T0))
    outcome = proc.process(Message(rec.topic, partition_for(b"other", PARTITIONS), 0, b"other", rec.value))
    assert by_topic(outcome.records)[topics.DLQ][0]["data"]["reason"] == "key_mismatch"


def test_wrong_partition_is_caught() -> None:
    proc = processor()
    rec = record(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1"))
    wrong = (partition_for(b"a1", PARTITIONS) + 1) % PARTITIONS
    outcome = proc.process(Message(rec.topic, wrong, 0, rec.key, rec.value))
    [dlq] = by_topic(outcome.records)[topics.DLQ]
    assert dlq["data"]["reason"] == "wrong_partition"
    assert "murmur2" in dlq["data"]["detail"]
    assert proc.table == {}


def test_redelivered_input_republishes_the_same_ids() -> None:
    proc = processor()
    proc.process(message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1")))
    expire = message(ev.ExpireTimer("a1", 1, T0 + 60_001), event_id="expire-1")
    first = by_topic(proc.process(expire).records)[topics.TIMER_EVENTS]
    again = by_topic(proc.process(expire).records)[topics.TIMER_EVENTS]
    assert [e["id"] for e in first] == [e["id"] for e in again] == ["a1:completed"]
    assert decode_state(proc.table[b"a1"]).version == 2


class FailingTable(dict[bytes, bytes]):
    """A table whose writes fail the way Faust's do before it knows the changelog's partitions
    (or with a given exception), `failures` times."""

    def __init__(self, failures: int, error: Exception) -> None:
        super().__init__()
        self.failures = failures
        self.error = error

    def __setitem__(self, key: bytes, value: bytes) -> None:
        if self.failures:
            self.failures -= 1
            raise self.error
        super().__setitem__(key, value)


async def test_a_table_failure_holds_the_message_and_retries_instead_of_dead_lettering() -> None:
    proc = processor()
    proc.table = FailingTable(3, PartitionsMismatch("the changelog has 0 partitions"))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    outcome = await proc.apply_message(message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1")), sleep)
    assert slept == [0.5, 1.0, 2.0]
    assert decode_state(proc.table[b"a1"]).version == 1
    assert topics.DLQ not in by_topic(outcome.records)
    assert [c.kind for c in outcome.changes] == ["registered"]


async def test_a_bug_met_by_one_message_dead_letters_it_and_moves_on() -> None:
    proc = processor()
    proc.table = FailingTable(1, RuntimeError("a bug"))
    outcome = await proc.apply_message(message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1"), offset=7))
    [dlq] = by_topic(outcome.records)[topics.DLQ]
    assert (dlq["data"]["reason"], dlq["data"]["offset"]) == ("internal_error", 7)
    assert "RuntimeError: a bug" in dlq["data"]["detail"]
    assert proc.table == {}
