"""The engine in-process, with Kafka's two roles played by fakes the test controls: which
acknowledgements arrive when (so the order "outputs, then changelog, then the input's ack" is
checked step by step), and where each input partition ends (the merge's evidence)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import RecordMetadata

from streams import effects as fx
from streams import engine, pipeline, topics
from streams import events as ev
from streams.delivery import Outgoing
from streams.engine import Engine
from streams.evidence import APPEND_MARGIN_MS
from streams.message import LOG_APPEND_TIME, Message
from streams.processor import TimerProcessor, partition_for
from streams.replay import reprocess
from streams.state import encode_state
from streams.states import StateCache
from tests.support.events import POLICY, T0, record
from tests.support.gateway import timer
from tests.support.waiting import eventually

PARTITIONS = 4
CHANGELOG = "timer-table-changelog"
NOW = T0 + 3_600_000  # the engine's clock: after every record's log time
CREATE_TIME = 0  # a record's timestamp_type when its producer stamped it


@dataclass
class Rec:
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None
    timestamp_type: int = LOG_APPEND_TIME


@dataclass
class Call:
    records: Sequence[Outgoing]
    done: asyncio.Future[list[RecordMetadata]]

    @property
    def topics(self) -> set[str]:
        return {r.topic for r in self.records}

    def ack(self) -> None:
        if self.done.done():  # cancelled with its partition
            return
        metas = [RecordMetadata(r.topic, r.partition or 0, None, i, 0, 0, None) for i, r in enumerate(self.records)]
        self.done.set_result(metas)


class FakeKafka:
    """Every deliver() waits until the test acknowledges it."""

    def __init__(self) -> None:
        self.calls: list[Call] = []

    async def deliver(self, records: Sequence[Outgoing]) -> list[RecordMetadata]:
        call = Call(list(records), asyncio.get_running_loop().create_future())
        self.calls.append(call)
        return await call.done


class EndsProbe:
    """Where each input partition ends: what the test has handed to the engine (so every idle
    partition is caught up), unless a partition is told to hold records not yet fetched."""

    def __init__(self) -> None:
        self.ends: dict[TopicPartition, int] = {}
        self.unfetched: dict[TopicPartition, int] = {}
        self.committed: dict[TopicPartition, int] = {}  # where the group starts a partition (else 0)
        self.starting = asyncio.Event()  # start-offset lookups answer once set
        self.starting.set()
        self.asked = 0  # end-offset lookups answered

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        self.asked += 1
        return {tp: self.ends.get(tp, 0) + self.unfetched.get(tp, 0) for tp in tps}

    async def start_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        await self.starting.wait()
        return {tp: self.committed.get(tp, 0) for tp in tps}


class MemoryRaw:
    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes, partition: int) -> bytes | None:
        return self.data.get(key)

    def put(self, key: bytes, partition: int, value: bytes | None) -> None:
        if value is None:
            self.data.pop(key, None)
        else:
            self.data[key] = value

    def persisted(self, partition: int, changelog_offset: int) -> None:
        pass


@dataclass
class Rig:
    engine: Engine
    kafka: FakeKafka
    probe: EndsProbe
    raw: MemoryRaw
    acked: list[str] = field(default_factory=list)
    changes: list[fx.TimerChanged] = field(default_factory=list)
    fatal: list[BaseException] = field(default_factory=list)
    offsets: dict[TopicPartition, itertools.count[int]] = field(default_factory=dict)
    paused: set[TopicPartition] = field(default_factory=set)
    sought: list[tuple[TopicPartition, int]] = field(default_factory=list)

    async def seek(self, tp: TopicPartition, offset: int) -> None:
        self.sought.append((tp, offset))

    def feed(
        self, payload: ev.Payload, log_ms: int, label: str, stamped: bool = True, value: bytes | None = None
    ) -> None:
        """One record in a batch of its own; `log_ms` is its timestamp (the broker's if `stamped`)."""
        out = record(payload, time_ms=log_ms)
        partition = partition_for(out.key, PARTITIONS)
        tp = TopicPartition(out.topic, partition)
        offset = next(self.offsets.setdefault(tp, itertools.count()))
        self.probe.ends[tp] = offset + 1
        kind = LOG_APPEND_TIME if stamped else CREATE_TIME
        batch = [Rec(offset, log_ms, out.key, value if value is not None else out.value, kind)]
        self.engine.receive(out.topic, partition, batch, lambda _start: self.acked.append(label))


def rig(
    processor_hook: Callable[[TimerProcessor], None] = lambda p: None,
    clock: Callable[[], int] = lambda: NOW,
) -> Rig:
    kafka, probe, raw = FakeKafka(), EndsProbe(), MemoryRaw()
    processor = TimerProcessor(
        states=StateCache(raw, lambda key: partition_for(key, PARTITIONS)), partitions=PARTITIONS, max_event_bytes=65536
    )
    processor_hook(processor)
    states = processor.states
    assert isinstance(states, StateCache)
    made = Rig(None, kafka, probe, raw)  # type: ignore[arg-type]
    made.engine = Engine(
        processor, states, kafka, probe, CHANGELOG,
        on_changes=made.changes.extend, on_reconcile=lambda _: None, on_fatal=made.fatal.append,
        pause=made.paused.update, resume=made.paused.difference_update, seek=made.seek, clock=clock,
    )  # fmt: skip
    return made


def ids_on(partition: int, count: int) -> list[str]:
    found = (f"auc-{i}" for i in itertools.count())
    return list(itertools.islice((a for a in found if partition_for(a.encode(), PARTITIONS) == partition), count))


async def until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    async def probe() -> bool:
        return condition()

    await eventually(probe, timeout, "the engine to get there", interval=0.001)


async def evidence_asked(r: Rig, times: int) -> None:
    """The engine's evidence has looked up end offsets `times` more times (bounded wait)."""
    target = r.probe.asked + times
    await until(lambda: r.probe.asked >= target)


async def settled() -> None:
    """Nothing is left to run but timers: every task that became ready has had its turns, so what
    must not happen has had its chance to. (The loop's ready queue holds the callbacks it runs
    next; asyncio has no public way to ask for it.)"""
    loop = asyncio.get_running_loop()
    await until(lambda: not loop._ready)  # type: ignore[attr-defined]


async def acknowledge_all(r: Rig, condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Kafka acknowledges whatever is asked of it until `condition` holds."""

    def acked_and_done() -> bool:
        for call in r.kafka.calls:
            call.ack()
        return condition()

    await until(acked_and_done, timeout)


def started(auction_id: str) -> ev.AuctionStarted:
    return ev.AuctionStarted(auction_id, T0, T0 + 60_000, POLICY, "m1")


async def test_an_input_is_acknowledged_only_after_its_outputs_and_then_its_changelog_record() -> None:
    r = rig()
    (a,) = ids_on(0, 1)
    r.feed(started(a), T0, "start")
    await until(lambda: len(r.kafka.calls) == 1)
    outputs_call = r.kafka.calls[0]
    assert outputs_call.topics == {topics.TIMER_EVENTS, topics.AUDIT, topics.ANALYTICS}
    assert [c.kind for c in r.changes] == ["registered"]  # the schedule hears of it at once
    await until(lambda: len(r.kafka.calls) == 1 and not r.acked)
    outputs_call.ack()
    await until(lambda: len(r.kafka.calls) == 2)
    changelog_call = r.kafka.calls[1]
    assert changelog_call.topics == {CHANGELOG}
    assert [(o.key, o.partition) for o in changelog_call.records] == [(a.encode(), 0)]
    assert r.acked == [] and a.encode() not in r.raw.data  # the store follows the changelog
    changelog_call.ack()
    await until(lambda: r.acked == ["start"])
    assert orjson.loads(r.raw.data[a.encode()])["version"] == 1
    assert r.fatal == []


async def test_a_refused_output_acknowledges_nothing() -> None:
    r = rig()
    (a,) = ids_on(0, 1)
    r.feed(started(a), T0, "start")
    await until(lambda: len(r.kafka.calls) == 1)
    r.kafka.calls[0].done.set_exception(RuntimeError("Kafka refused"))
    await until(lambda: len(r.fatal) == 1)
    await settled()
    assert len(r.fatal) == 1  # reported once
    assert r.acked == [] and len(r.kafka.calls) == 1  # no changelog record, no ack


async def test_a_held_partition_folds_nothing_new_while_the_others_go_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pipeline, "DELIVERY_PATIENCE_S", 0.01)
    r = rig()
    a, a2 = ids_on(0, 2)
    (b,) = ids_on(1, 1)
    r.feed(started(a), T0, "a")
    await until(lambda: len(r.kafka.calls) == 1)
    stalled = r.kafka.calls[0]
    await until(lambda: r.engine.groups[0].pipeline.held)
    r.feed(started(a2), T0 + 1, "a2")  # waits: partition 0 is held
    r.feed(started(b), T0 + 1, "b")  # partition 1 is not
    await until(lambda: len(r.kafka.calls) == 2)
    assert b.encode() in {o.key for o in r.kafka.calls[1].records}
    r.kafka.calls[1].ack()
    await until(lambda: len(r.kafka.calls) == 3)
    r.kafka.calls[2].ack()
    await until(lambda: r.acked == ["b"])
    assert [c.state.auction_id for c in r.changes] == [a, b]  # a2 not folded yet
    stalled.ack()  # Kafka takes partition 0's records: a2 is folded now
    await until(lambda: len(r.changes) == 3)
    assert [c.state.auction_id for c in r.changes] == [a, b, a2]
    await acknowledge_all(r, lambda: sorted(r.acked) == ["a", "a2", "b"])


async def test_rounds_are_acknowledged_in_order_even_when_kafka_answers_out_of_order() -> None:
    r = rig()
    a1, a2 = ids_on(2, 2)
    r.feed(started(a1), T0, "first")
    await until(lambda: len(r.kafka.calls) == 1)
    r.feed(started(a2), T0 + 1, "second")
    await until(lambda: len(r.kafka.calls) == 2)
    r.kafka.calls[1].ack()  # the second round's outputs first
    await settled()
    assert len(r.kafka.calls) == 2 and r.acked == []  # no changelog while the first is out
    r.kafka.calls[0].ack()
    await until(lambda: len(r.kafka.calls) == 3)
    assert {o.key for o in r.kafka.calls[2].records} == {a1.encode(), a2.encode()}  # one write for both
    r.kafka.calls[2].ack()
    await until(lambda: r.acked == ["first", "second"])


async def test_a_bid_waits_for_an_idle_partition_until_the_log_shows_it_holds_nothing_earlier() -> None:
    r = rig()
    (a,) = ids_on(3, 1)
    bids_tp = TopicPartition(topics.BID_PLACED, 3)
    r.probe.unfetched[TopicPartition(topics.AUCTION_STARTED, 3)] = 1  # the registration is not fetched yet
    r.feed(ev.BidPlaced(a, "b1", "u1", "10", T0 + 59_000), T0 + 59_000, "bid")  # in the soft-close window
    await evidence_asked(r, 20)  # the evidence asks many times meanwhile
    assert r.kafka.calls == [] and r.changes == []  # the bid waits: the registration may come first
    r.probe.unfetched.clear()
    r.feed(started(a), T0, "start")  # fetched late, appended first
    await until(lambda: len(r.changes) == 2)
    assert [c.kind for c in r.changes] == ["registered", "extended"]
    assert r.changes[1].state.ends_at_ms == T0 + 61_000  # the bid's time + 2 s
    await acknowledge_all(r, lambda: sorted(r.acked) == ["bid", "start"])
    assert r.probe.ends[bids_tp] == 1


async def test_revoking_a_partition_never_acknowledges_its_inputs_later() -> None:
    r = rig()
    (a,) = ids_on(0, 1)
    r.feed(started(a), T0, "start")
    await until(lambda: len(r.kafka.calls) == 1)
    await r.engine.revoke([0])
    r.kafka.calls[0].ack()
    await settled()
    assert r.acked == [] and len(r.kafka.calls) == 1  # the next owner folds it again
    assert 0 not in r.engine.groups


async def test_a_fold_that_breaks_outside_any_record_stops_the_worker_unacknowledged() -> None:
    def broken(processor: TimerProcessor) -> None:
        states = processor.states
        assert isinstance(states, StateCache)

        def take_unwritten() -> dict[bytes, object]:
            raise MemoryError("simulated")

        states.take_unwritten = take_unwritten  # type: ignore[method-assign, assignment]

    r = rig(broken)
    a, a2 = ids_on(0, 2)
    r.feed(started(a), T0, "start")
    await until(lambda: len(r.fatal) == 1)
    assert isinstance(r.fatal[0], MemoryError)
    r.feed(started(a2), T0 + 1, "later")  # folds nothing more
    await settled()
    assert len(r.fatal) == 1 and r.acked == [] and r.kafka.calls == [] and r.changes == []


async def test_a_partition_whose_append_time_steps_back_loses_no_record() -> None:
    """A later bid of the same partition stamped a few ms earlier (its leader moved to a broker
    whose clock is behind) is folded, not taken for one folded already."""
    r = rig()
    (a,) = ids_on(0, 1)
    r.feed(started(a), T0, "start")
    r.feed(ev.BidPlaced(a, "b1", "u1", "10", T0 + 59_000), T0 + 59_000, "b1")
    r.feed(ev.BidPlaced(a, "b2", "u2", "11", T0 + 59_500), T0 + 58_995, "b2")
    await acknowledge_all(r, lambda: sorted(r.acked) == ["b1", "b2", "start"])
    assert [(c.kind, c.state.ends_at_ms) for c in r.changes] == [
        ("registered", T0 + 60_000), ("extended", T0 + 61_000), ("extended", T0 + 61_500),
    ]  # fmt: skip


async def test_a_record_appended_behind_records_folded_already_comes_late_not_never() -> None:
    """The bids partition was caught up past the registration's time, then a bid stamped before
    it arrives (its broker's clock is behind): it is folded after the registration, not skipped
    as if its auction's state already held it."""
    r = rig()
    (a,) = ids_on(1, 1)
    r.feed(ev.AuctionStarted(a, T0, T0 + 1_000, POLICY, "m1"), T0 + 100, "start")
    await acknowledge_all(r, lambda: r.acked == ["start"])
    r.feed(ev.BidPlaced(a, "b1", "u1", "10", T0 + 50), T0 + 50, "bid")
    await acknowledge_all(r, lambda: sorted(r.acked) == ["bid", "start"])
    assert [(c.kind, c.state.ends_at_ms) for c in r.changes] == [("registered", T0 + 1_000), ("extended", T0 + 2_050)]


async def test_a_partition_ending_in_transaction_markers_does_not_block_its_group() -> None:
    """A partition whose end is past its last record (a transaction's commit marker) is caught up
    once the consumer's position moves over the marker: a batch without records says so."""
    r = rig()
    (a,) = ids_on(3, 1)
    started_tp = TopicPartition(topics.AUCTION_STARTED, 3)
    r.feed(started(a), T0, "start")
    await acknowledge_all(r, lambda: r.acked == ["start"])
    r.probe.unfetched[started_tp] = 1  # the marker after the registration
    r.feed(ev.BidPlaced(a, "b1", "u1", "10", T0 + 59_000), T0 + 59_000, "bid")
    await evidence_asked(r, 20)  # the evidence asks many times meanwhile
    assert len(r.changes) == 1  # the bid waits: the registrations partition is not known caught up
    r.engine.receive(topics.AUCTION_STARTED, 3, [], lambda _start: r.acked.append("marker"), start=1, end=2)
    assert "marker" in r.acked  # nothing to fold: acknowledged at once (the commit chains it in order)
    await acknowledge_all(r, lambda: "bid" in r.acked)
    assert [c.kind for c in r.changes] == ["registered", "extended"]


async def test_a_revoked_partition_acknowledges_nothing_and_writes_nothing_after_the_revocation() -> None:
    r = rig()
    (a,) = ids_on(0, 1)
    (b,) = ids_on(1, 1)
    r.feed(started(a), T0, "a")
    await until(lambda: len(r.kafka.calls) == 1)
    r.kafka.calls[0].ack()
    await until(lambda: len(r.kafka.calls) == 2)  # a's changelog write in flight
    r.feed(started(b), T0 + 1, "b")
    await until(lambda: len(r.kafka.calls) == 3)  # b's outputs in flight
    revoking = asyncio.ensure_future(r.engine.revoke([0, 1]))
    await until(lambda: not r.engine.groups)  # the revocation began: the groups are dropped first
    r.kafka.calls[2].ack()  # b's outputs land within the revocation's wait: no changelog write follows
    await settled()
    r.kafka.calls[1].ack()  # a's changelog write lands within the wait: it is not acknowledged
    await revoking
    await settled()
    assert r.acked == [] and len(r.kafka.calls) == 3  # no ack, no changelog write started since


async def test_a_partition_buffering_too_many_bytes_is_paused_until_half_is_folded() -> None:
    r = rig()
    (a,) = ids_on(2, 1)
    r.probe.unfetched[TopicPartition(topics.AUCTION_STARTED, 2)] = 1  # the merge waits: bids pile up
    bids_tp = TopicPartition(topics.BID_PLACED, 2)
    big = b"x" * (1024 * 1024)  # oversized: dead-lettered once folded
    for n in range(33):
        r.feed(ev.BidPlaced(a, f"b{n}", "u", "1", T0 + n), T0 + n, f"bid{n}", value=big)
    assert r.paused == {bids_tp}  # 33 MiB buffered > 32 MiB, though far fewer than 5,000 records
    r.paused.clear()  # Faust's own flow control resumes it (its queue drained)
    r.feed(ev.BidPlaced(a, "b33", "u", "1", T0 + 33), T0 + 33, "bid33")
    assert r.paused == {bids_tp}  # still over: paused again
    r.probe.unfetched.clear()
    await acknowledge_all(r, lambda: len(r.acked) == 34)
    assert r.paused == set()


async def test_a_producer_stamped_record_of_any_time_is_dead_lettered_and_moves_no_watermark() -> None:
    r = rig()
    (a,) = ids_on(1, 1)
    r.feed(started(a), T0, "start")
    r.feed(ev.BidPlaced(a, "b1", "u1", "10", T0 + 10), 2**62, "bid", stamped=False)
    await acknowledge_all(r, lambda: sorted(r.acked) == ["bid", "start"])
    dlq = [o for call in r.kafka.calls for o in call.records if o.topic == topics.DLQ]
    assert [orjson.loads(o.value or b"")["data"]["reason"] for o in dlq] == ["not_log_append_time"]
    mark = r.engine.watermark(1)
    assert r.fatal == [] and mark is not None and mark <= NOW  # not the producer's year 146 million


def test_replay_folds_a_partition_whose_append_time_steps_back_as_the_worker_does() -> None:
    (a,) = ids_on(0, 1)
    inputs: list[tuple[ev.Payload, int, int]] = [
        (started(a), T0, 0),
        (ev.BidPlaced(a, "b1", "u1", "10", T0 + 59_000), T0 + 59_000, 0),
        (ev.BidPlaced(a, "b2", "u2", "11", T0 + 59_500), T0 + 58_995, 1),
    ]
    messages = []
    for payload, log_ms, offset in inputs:
        out = record(payload, time_ms=log_ms)
        messages.append(Message(out.topic, 0, offset, log_ms, out.key, out.value))
    replayed = reprocess(messages, PARTITIONS, 65_536)
    state = replayed.states[a]
    assert (state.version, state.ends_at_ms, state.extension_count) == (3, T0 + 61_500, 2)


async def test_records_fetched_again_after_the_assignments_seek_are_folded_once() -> None:
    """When an assignment begins Faust seeks each partition to its committed offset, and a fetch
    that raced the seek is handed on again (a kill -9 drill saw it: the second copy was folded
    as a later record, so the outputs differed from the log's). Only what was not received yet
    is folded, and acknowledged from where it starts, so that the commit chains batch to batch."""
    r = rig()
    (a,) = ids_on(3, 1)
    r.feed(started(a), T0, "start")
    await acknowledge_all(r, lambda: r.acked == ["start"])
    bids = [record(ev.BidPlaced(a, f"b{i}", "u1", "10", T0 + 59_000 + i), time_ms=T0 + 59_000 + i) for i in range(3)]
    copies = [Rec(i, T0 + 59_000 + i, b.key, b.value) for i, b in enumerate(bids)]
    r.probe.ends[TopicPartition(topics.BID_PLACED, 3)] = 3
    acks: list[tuple[str, int | None]] = []
    r.engine.receive(topics.BID_PLACED, 3, copies[:2], lambda s: acks.append(("first", s)), start=0, end=2)
    r.engine.receive(topics.BID_PLACED, 3, copies[:2], lambda s: acks.append(("again", s)), start=0, end=2)
    r.engine.receive(topics.BID_PLACED, 3, copies, lambda s: acks.append(("overlapping", s)), start=0, end=3)
    await acknowledge_all(r, lambda: len(acks) == 2)
    assert acks == [("first", 0), ("overlapping", 2)]
    extended = [c.state.version for c in r.changes if c.kind == "extended"]
    assert extended == [2, 3, 4]  # one extension per bid, not five


def bid_records(auction_id: str, offsets: range) -> list[Rec]:
    """Bids of one auction at these offsets of its partition, appended a millisecond apart."""
    out = []
    for i in offsets:
        bid = record(ev.BidPlaced(auction_id, f"b{i}", "u1", "10", T0 + 59_000 + i), time_ms=T0 + 59_000 + i)
        out.append(Rec(i, T0 + 59_000 + i, bid.key, bid.value))
    return out


async def registered_with_bids(count: int) -> tuple[Rig, TopicPartition, list[Rec]]:
    """A rig with one auction registered on partition 3, and `count` of its bids in Kafka, none
    received yet (the test hands them to the engine as it likes)."""
    r = rig()
    (a,) = ids_on(3, 1)
    r.feed(started(a), T0, "start")
    await acknowledge_all(r, lambda: r.acked == ["start"])
    bids_tp = TopicPartition(topics.BID_PLACED, 3)
    r.probe.ends[bids_tp] = count
    return r, bids_tp, bid_records(a, range(count))


async def test_a_batch_beginning_past_where_its_partition_was_received_is_fetched_again() -> None:
    """Faust drops a fetched batch that a rebalance or its flow control interrupts and seeks back
    only to a committed offset; the consumer's position is then past records the engine never got
    (a kill -9 drill lost one bid so, and a handover one registration). Such a batch is not
    folded: the partition is sought back to where it was received, once, and folded when the
    records come again."""
    r, bids_tp, bids = await registered_with_bids(4)
    acks: list[tuple[str, int | None]] = []
    r.engine.receive(topics.BID_PLACED, 3, bids[:1], lambda s: acks.append(("first", s)), start=0, end=1)
    # offset 1 was fetched and dropped before the engine: the consumer's position was 2
    r.engine.receive(topics.BID_PLACED, 3, bids[2:3], lambda s: acks.append(("past", s)), start=2, end=3)
    r.engine.receive(topics.BID_PLACED, 3, bids[3:], lambda s: acks.append(("further", s)), start=3, end=4)
    await acknowledge_all(r, lambda: len(acks) == 1)
    await settled()
    assert acks == [("first", 0)] and r.sought == [(bids_tp, 1)]  # one seek for both
    assert [c.state.version for c in r.changes if c.kind == "extended"] == [2]
    # the seek is through, and a batch past the hole still comes (fetched before it, or dropped
    # again): the engine asks again rather than waiting for records that may never come
    r.engine.receive(topics.BID_PLACED, 3, bids[3:], lambda s: acks.append(("stale", s)), start=3, end=4)
    await settled()
    assert r.sought == [(bids_tp, 1), (bids_tp, 1)]
    r.engine.receive(topics.BID_PLACED, 3, bids[1:], lambda s: acks.append(("again", s)), start=1, end=4)
    await acknowledge_all(r, lambda: len(acks) == 2)
    assert acks == [("first", 0), ("again", 1)]
    ends = [c.state.ends_at_ms for c in r.changes if c.kind == "extended"]
    assert [c.state.version for c in r.changes if c.kind == "extended"] == [2, 3, 4, 5]
    assert [e - ends[0] for e in ends] == [0, 1, 2, 3]  # each bid once, in offset order


async def test_batches_wait_for_the_partitions_start_and_one_past_it_is_fetched_again() -> None:
    """A partition nobody committed yet starts at the log's start: a batch that arrives before the
    engine knows where its group starts waits for the lookup, and one that begins past that
    start (its first records dropped by Faust) is fetched again from it."""
    r = rig()
    (a,) = ids_on(2, 1)
    started_tp = TopicPartition(topics.AUCTION_STARTED, 2)
    r.probe.starting.clear()
    start = record(started(a), time_ms=T0)
    r.probe.ends[started_tp] = 1
    r.engine.receive(topics.AUCTION_STARTED, 2, [Rec(0, T0, start.key, start.value)], lambda s: r.acked.append("early"),
                     start=0, end=1)  # fmt: skip
    await settled()
    assert r.changes == [] and r.kafka.calls == []  # the start is not known yet
    r.probe.starting.set()
    await acknowledge_all(r, lambda: r.acked == ["early"])
    assert [c.kind for c in r.changes] == ["registered"] and r.sought == []
    (b,) = ids_on(1, 1)
    started_b = TopicPartition(topics.AUCTION_STARTED, 1)
    later = record(started(b), time_ms=T0 + 1)
    r.probe.ends[started_b] = 2
    r.probe.committed[started_b] = 0
    r.engine.receive(topics.AUCTION_STARTED, 1, [Rec(1, T0 + 1, later.key, later.value)],
                     lambda s: r.acked.append("past"), start=1, end=2)  # fmt: skip
    await until(lambda: r.sought == [(started_b, 0)])
    assert [c.kind for c in r.changes] == ["registered"]  # b's registration is not folded past offset 0


async def test_a_partition_the_consumer_read_past_without_handing_it_on_is_fetched_again() -> None:
    """A dropped batch that was its partition's last is revealed by no later batch: the consumer's
    position, past what the engine received and still there a look later, says so."""
    r, bids_tp, bids = await registered_with_bids(3)
    r.engine.receive(topics.BID_PLACED, 3, bids[:1], lambda s: r.acked.append("b0"), start=0, end=1)
    r.engine.check_positions({bids_tp: 2})  # the consumer is at 2; the batch [1] may still be on its way
    r.engine.check_positions({bids_tp: 2})
    r.engine.receive(topics.BID_PLACED, 3, bids[1:2], lambda s: r.acked.append("b1"), start=1, end=2)
    r.engine.check_positions({bids_tp: 3})  # it came; now the consumer read 2, which may be on its way
    r.engine.check_positions({bids_tp: 3})
    await settled()
    assert r.sought == []  # a batch may wait behind a busy fold: one still look proves nothing
    r.engine.check_positions({bids_tp: 3})  # two: [2] was dropped
    await settled()
    assert r.sought == [(bids_tp, 2)]
    r.engine.receive(topics.BID_PLACED, 3, bids[2:], lambda s: r.acked.append("b2"), start=2, end=3)
    for _ in range(4):
        r.engine.check_positions({bids_tp: 3})  # caught up: nothing more to fetch
    await acknowledge_all(r, lambda: r.acked == ["start", "b0", "b1", "b2"])
    assert r.sought == [(bids_tp, 2)]


async def test_a_partition_with_too_many_records_unacknowledged_folds_nothing_new_until_half_are(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A worker folding a backlog faster than Kafka takes its outputs must not hold them all in
    memory (a million registrations once took a worker past 19 GiB)."""
    monkeypatch.setattr(pipeline, "MAX_IN_FLIGHT", 6)
    r = rig()
    a, b, c = ids_on(0, 3)
    r.feed(started(a), T0, "a")
    await until(lambda: len(r.kafka.calls) == 1)  # three outputs and a changelog entry in flight
    r.feed(started(b), T0 + 1, "b")
    await until(lambda: len(r.kafka.calls) == 2)  # eight: full
    r.feed(started(c), T0 + 2, "c")
    await evidence_asked(r, 1)  # the other partitions vouched for: c could go, but for the bound
    await settled()
    assert [ch.state.auction_id for ch in r.changes] == [a, b]  # c waits
    await acknowledge_all(r, lambda: r.acked == ["a", "b", "c"])
    assert [ch.state.auction_id for ch in r.changes] == [a, b, c]


async def test_a_backlog_released_at_once_is_folded_in_rounds_of_bounded_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """However much the merge releases at once, a round folds at most MAX_ROUND_INPUTS inputs, so
    that the bound on a partition's unacknowledged records holds for a backlog too."""
    monkeypatch.setattr(engine, "MAX_ROUND_INPUTS", 2)
    r = rig()
    auctions = ids_on(1, 5)
    r.probe.unfetched[TopicPartition(topics.BID_PLACED, 1)] = 1  # the merge waits: registrations pile up
    for n, a in enumerate(auctions):
        r.feed(started(a), T0 + n, a)
    await evidence_asked(r, 20)  # the evidence asks many times meanwhile
    assert r.kafka.calls == []
    r.probe.unfetched.clear()  # released at once: five inputs, folded two, two and one
    await until(lambda: len(r.kafka.calls) == 3)
    assert [len(call.records) for call in r.kafka.calls] == [6, 6, 3]
    await acknowledge_all(r, lambda: r.acked == auctions)


async def test_a_lookup_vouches_only_up_to_the_append_margin_before_it_was_sent() -> None:
    """A broker stamps a record a moment before its log end moves past it: an idle partition
    counts as caught up only up to APPEND_MARGIN_MS before the lookup."""
    now = [T0 + 60_000 + APPEND_MARGIN_MS]
    r = rig(clock=lambda: now[0])
    (a,) = ids_on(2, 1)
    r.feed(started(a), T0, "start")
    await acknowledge_all(r, lambda: r.acked == ["start"])
    r.feed(ev.ExpireTimer(a, 1, T0 + 60_000), T0 + 60_000, "expire")  # the bids partition is idle
    await evidence_asked(r, 20)  # the evidence asks many times meanwhile
    assert [c.kind for c in r.changes] == ["registered"]  # within the margin: not yet vouched for
    now[0] = T0 + 60_001 + APPEND_MARGIN_MS
    await acknowledge_all(r, lambda: r.acked == ["start", "expire"])
    assert [c.kind for c in r.changes] == ["registered", "completed"]


def test_a_peek_reads_the_store_without_caching_what_it_read() -> None:
    """The scheduler's and reconciler's reads (`peek`) see what the fold sees, but a pass over
    every auction must not push the fold's working set out of the cache."""
    raw = MemoryRaw()
    state = timer("peeked", 60_000)
    raw.put(b"peeked", 0, encode_state(state))
    states = StateCache(raw, lambda key: 0, capacity=1)
    assert states.peek(b"peeked") == state
    raw.put(b"peeked", 0, None)  # gone from the store: a cached copy would still answer
    assert states.peek(b"peeked") is None
    raw.put(b"peeked", 0, encode_state(state))
    assert states.get(b"peeked") == state  # the fold's read caches it
    raw.put(b"peeked", 0, None)
    assert states.peek(b"peeked") == state


def test_only_live_states_are_cached() -> None:
    """An ended auction is read again by a late bid at most: its state is not kept decoded."""
    raw = MemoryRaw()
    live, ended = timer("live", 60_000), replace(timer("ended", 60_000), status="ended", version=2)
    states = StateCache(raw, lambda key: 0)
    for state in (live, ended):
        raw.put(state.auction_id.encode(), 0, encode_state(state))
        assert states.get(state.auction_id.encode()) == state
        raw.put(state.auction_id.encode(), 0, None)
    assert states.get(b"live") == live and states.get(b"ended") is None
    states.put(b"live", replace(live, status="ended", version=2))  # it ends: out of the cache once written
    states.written(b"live", states.take_unwritten()[b"live"], None)  # None: the store holds nothing of it now
    assert states.get(b"live") is None
