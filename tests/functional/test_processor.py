"""The outer layer in-process: decode, fold, states, and the records it would publish."""

from __future__ import annotations

import itertools

import orjson

from streams import events as ev
from streams import outputs, topics
from streams.message import Message
from streams.processor import TimerProcessor, partition_for
from streams.replay import MemoryStates
from tests.support.events import POLICY, T0, record

PARTITIONS = 8
_offsets = itertools.count(100)


def processor() -> TimerProcessor:
    return TimerProcessor(states=MemoryStates(), partitions=PARTITIONS, max_event_bytes=65536)


def message(payload: ev.Payload, offset: int | None = None, event_id: str | None = None, log_ms: int = T0) -> Message:
    rec = record(payload, event_id=event_id, time_ms=log_ms)
    return Message(rec.topic, partition_for(rec.key, PARTITIONS), offset if offset is not None else next(_offsets),
                   log_ms, rec.key, rec.value)  # fmt: skip


def by_topic(records: list[outputs.Record]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for r in records:
        out.setdefault(r.topic, []).append(orjson.loads(r.value))
    return out


def states(proc: TimerProcessor) -> dict:
    table = proc.states
    assert isinstance(table, MemoryStates)
    return table.states


def test_registration_updates_the_table_and_publishes_with_the_input_trace() -> None:
    proc = processor()
    msg = message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1"))
    upstream_trace = orjson.loads(msg.value or b"")["traceparent"][3:35]
    outcome = proc.process(msg)
    state = states(proc)[b"a1"]
    assert (state.version, state.ends_at_ms) == (1, T0 + 60_000)
    out = by_topic(outcome.records)
    assert set(out) == {topics.TIMER_EVENTS, topics.AUDIT, topics.ANALYTICS}
    assert out[topics.TIMER_EVENTS][0]["id"] == "a1:v1"
    assert out[topics.TIMER_EVENTS][0]["traceparent"][3:35] == upstream_trace
    assert out[topics.AUDIT][0]["data"]["trace_id"] == upstream_trace
    assert out[topics.AUDIT][0]["id"] == f"a1:{msg.position}:registered"
    assert out[topics.ANALYTICS][0]["event"] == "auction_timer_started"
    assert out[topics.ANALYTICS][0]["properties"]["trace_id"] == upstream_trace
    assert [c.kind for c in outcome.changes] == ["registered"]


def test_completion_has_the_deterministic_id_and_the_logs_time() -> None:
    proc = processor()
    proc.process(message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1")))
    outcome = proc.process(message(ev.ExpireTimer("a1", 1, T0 + 60_001), log_ms=T0 + 60_007))
    [completed] = by_topic(outcome.records)[topics.TIMER_EVENTS]
    assert completed["id"] == "a1:completed"
    assert (completed["data"]["ended_at_ms"], completed["data"]["server_time_ms"]) == (T0 + 60_007, T0 + 60_007)


def test_the_same_record_folded_again_from_the_same_state_gives_the_same_bytes() -> None:
    """What a crash before the changelog write leads to: the next owner folds the record again
    from the older state, and must publish exactly what was published, id and content."""
    proc = processor()
    proc.process(message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1")))
    before = dict(states(proc))
    bid = message(ev.BidPlaced("a1", "b1", "u1", "9", T0 + 59_000), log_ms=T0 + 59_001)
    first = proc.process(bid).records
    states(proc).clear()
    states(proc).update(before)
    second = proc.process(bid).records
    assert [(r.topic, r.key, r.value) for r in first] == [(r.topic, r.key, r.value) for r in second]
    assert {r.topic for r in first} == {topics.TIMER_EVENTS, topics.AUDIT, topics.ANALYTICS}


def test_a_record_delivered_again_after_its_change_was_stored_publishes_nothing() -> None:
    proc = processor()
    proc.process(message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1")))
    expire = message(ev.ExpireTimer("a1", 1, T0 + 60_001), event_id="expire-1", log_ms=T0 + 60_002)
    assert by_topic(proc.process(expire).records)[topics.TIMER_EVENTS][0]["id"] == "a1:completed"
    assert proc.process(expire).records == []
    assert states(proc)[b"a1"].version == 2


def test_garbage_goes_to_the_dlq_with_reason_and_position() -> None:
    proc = processor()
    outcome = proc.process(Message(topics.BID_PLACED, 3, 41, T0, b"a1", b"\xff\xfenot json"))
    [dlq] = by_topic(outcome.records)[topics.DLQ]
    assert dlq["id"] == f"{topics.BID_PLACED}:3:41"
    assert dlq["data"]["reason"] == "not_json"
    assert (dlq["data"]["topic"], dlq["data"]["partition"], dlq["data"]["offset"]) == (topics.BID_PLACED, 3, 41)
    assert dlq["data"]["value"] is None and dlq["data"]["value_base64"]
    assert dlq["data"]["received_at_ms"] == T0
    assert states(proc) == {}


def test_any_input_size_gives_a_bounded_dlq_record() -> None:
    """A 1 MiB value of NUL bytes (6 MB once JSON-escaped) and a 700 KB key: the DLQ record stays
    far below the producer's 1 MB limit and says what it left out."""
    proc = TimerProcessor(states=MemoryStates(), partitions=PARTITIONS, max_event_bytes=1_048_576)
    huge = b"\x00" * 1_048_576
    for key, value in [(b"k", huge), (b"k" * 700_000, b"{}"), (None, huge)]:
        [dlq_record] = proc.process(Message(topics.BID_PLACED, 0, 5, T0, key, value)).records
        assert len(dlq_record.value) < 150_000 and len(dlq_record.key) <= outputs.DLQ_KEY_CHARS + 64
        dlq = orjson.loads(dlq_record.value)["data"]
        assert dlq["truncated"] is True and dlq["size"] == len(value)
        assert dlq["reason"] in ("not_json", "key_mismatch")


def test_unknown_auction_bid_is_dead_lettered_and_audited() -> None:
    proc = processor()
    outcome = proc.process(message(ev.BidPlaced("ghost", "b1", "u1", "1", T0)))
    out = by_topic(outcome.records)
    assert out[topics.DLQ][0]["data"]["reason"] == "unknown_auction"
    assert out[topics.AUDIT][0]["data"]["reason"] == "unknown_auction"


def test_key_must_be_the_auction_id() -> None:
    proc = processor()
    rec = record(ev.BidPlaced("a1", "b1", "u1", "1", T0), time_ms=T0)
    outcome = proc.process(Message(rec.topic, partition_for(b"other", PARTITIONS), 0, T0, b"other", rec.value))
    assert by_topic(outcome.records)[topics.DLQ][0]["data"]["reason"] == "key_mismatch"


def test_wrong_partition_is_caught() -> None:
    proc = processor()
    rec = record(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1"), time_ms=T0)
    wrong = (partition_for(b"a1", PARTITIONS) + 1) % PARTITIONS
    outcome = proc.process(Message(rec.topic, wrong, 0, T0, rec.key, rec.value))
    [dlq] = by_topic(outcome.records)[topics.DLQ]
    assert dlq["data"]["reason"] == "wrong_partition"
    assert "murmur2" in dlq["data"]["detail"]
    assert states(proc) == {}


def test_a_bug_met_by_one_message_dead_letters_it_and_moves_on() -> None:
    proc = processor()
    msg = message(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1"), offset=7)
    [dlq] = by_topic(proc.internal_error(msg, RuntimeError("a bug")).records)[topics.DLQ]
    assert (dlq["data"]["reason"], dlq["data"]["offset"]) == ("internal_error", 7)
    assert "RuntimeError: a bug" in dlq["data"]["detail"]


def test_a_record_stamped_by_its_producer_is_dead_lettered() -> None:
    """CreateTime on an input topic (a misconfigured topic): its time cannot be trusted, so the
    record goes to the DLQ with a reason saying how to fix the topic, never into the fold."""
    proc = processor()
    rec = record(ev.AuctionStarted("a1", T0, T0 + 60_000, POLICY, "m1"), time_ms=T0)
    msg = Message(rec.topic, partition_for(rec.key, PARTITIONS), 3, T0, rec.key, rec.value, log_append_time=False)
    [dlq] = by_topic(proc.process(msg).records)[topics.DLQ]
    assert dlq["data"]["reason"] == "not_log_append_time"
    assert "LogAppendTime" in dlq["data"]["detail"]
    assert states(proc) == {}
