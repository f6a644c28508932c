"""The commit of a batched input partition: it moves over acknowledged batches chained by the
consumer's positions, so transaction markers between batches are no holes, while a batch never
acknowledged, or acknowledged for an assignment that is over, never lets it move."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from functools import partial
from types import SimpleNamespace
from typing import Any

from aiokafka import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from streams import topics
from streams.faust_batches import BatchConsumer, BatchMessage, CommittedReads

TP0 = TP(topics.BID_PLACED, 0)


def consumer(committed: int | None, generation: int = 1) -> Any:
    fake = SimpleNamespace(
        batched=frozenset(topics.INPUT_TOPICS),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _batches={},
        _revoked=set(),
        _committed_offset=defaultdict(lambda: None),
        app=SimpleNamespace(consumer_generation_id=generation),
    )
    fake._committed_offset[TP0] = committed
    return fake


def acked(fake: Any, start: int, end: int, generation: int = 1) -> bool:
    return BatchConsumer.batch_acked(fake, BatchMessage(TP0, [], generation, start, end))


def commit(fake: Any) -> int | None:
    offset = BatchConsumer._new_offset(fake, TP0)
    if offset is not None:
        fake._committed_offset[TP0] = offset
    return offset


def test_batches_chain_over_transaction_markers_in_any_acknowledgement_order() -> None:
    fake = consumer(committed=100)
    assert acked(fake, 151, 200)  # after a commit marker at 150: this batch started at position 151...
    assert commit(fake) is None  # ...and nothing before it is acknowledged yet
    assert acked(fake, 100, 151)  # the batch before it ended past the marker (position 151)
    assert commit(fake) == 200
    assert acked(fake, 200, 203)  # a batch without records: the position moved over markers only
    assert commit(fake) == 203
    assert fake._batches[TP0] == {}


def test_a_batch_never_acknowledged_stops_the_commit_there() -> None:
    fake = consumer(committed=0)
    assert acked(fake, 0, 10) and acked(fake, 20, 30)
    assert commit(fake) == 10
    assert commit(fake) is None  # 10..20 was never acknowledged: the commit stays at 10


def test_acknowledgements_of_an_assignment_that_is_over_are_refused() -> None:
    fake = consumer(committed=100, generation=2)
    assert not acked(fake, 100, 150, generation=1)  # fetched before the rebalance
    fake._revoked.add(TP0)
    assert not acked(fake, 100, 150, generation=2)  # revoked, not assigned again yet
    assert commit(fake) is None and fake._batches == {}


async def test_a_batch_of_an_input_partition_paused_during_the_fetch_is_handed_on() -> None:
    """The engine pauses a partition that buffers too much; a fetch already under way may still
    return its records, and the client's position has moved past them. Faust would skip them (a
    loss, and a commit that never moves again); an input's batch is handed on."""
    paused, changelog = TP0, TP("timers-changelog", 0)
    records = {paused: [_record(TP0, 100), _record(TP0, 101)], changelog: [_record(changelog, 7)]}
    fake = consumer(committed=100)

    async def wait_next_records(timeout: float) -> tuple[dict[TP, Any], set[TP]]:
        fake._fetching = 1  # the generation _getmany notes as it begins the fetch
        fake._thread = SimpleNamespace(positions=({paused: 100, changelog: 7}, {paused: 102, changelog: 8}))
        return records, set()  # both paused by the time the fetch returns

    fake.should_stop, fake.flow_active = False, True
    fake._wait_next_records = wait_next_records
    fake._buffered_partitions = set()
    fake.highwater = lambda tp: 0
    fake.app.monitor = SimpleNamespace(track_tp_end_offset=lambda tp, offset: None)
    fake._read_offset = defaultdict(lambda: None, {paused: 500})  # a batch fetched before a seek back passed
    fake._hand_on = partial(BatchConsumer._hand_on, fake)
    handed = []
    async for tp, message in BatchConsumer.getmany(fake, 1.0):
        # Faust drops a message below the last offset it read, checked as it takes one: the mark
        # is gone by then (the engine leaves out copies itself)
        assert fake._read_offset[tp] is None
        handed.append((tp, message))
    assert [(tp, m.start, m.end, [r.offset for r in m.records]) for tp, m in handed] == [(paused, 100, 102, [100, 101])]


def _record(tp: TP, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 1, None, b"x", None, 1, 1, [])


async def test_after_a_rebalance_an_input_partition_nobody_committed_goes_back_to_its_start() -> None:
    """Faust drops batches fetched while its flow is stopped and seeks back to the committed
    offsets; aiokafka seeks nowhere for a partition without one (a handover lost the first
    registration of a fresh partition so). The worker's consumer seeks those to the log's start."""
    bids1, bids2, changelog = TP(topics.BID_PLACED, 1), TP(topics.BID_PLACED, 2), TP("timers-changelog", 0)
    sought: list[tuple[TP, ...]] = []

    async def seek_to_committed() -> dict[TP, int | None]:
        return {TP0: 5, bids1: None, bids2: 0, changelog: None}

    async def seek_to_beginning(*tps: TP) -> None:
        sought.append(tps)

    fake = SimpleNamespace(
        batched=frozenset(topics.INPUT_TOPICS),
        _thread=SimpleNamespace(seek_to_committed=seek_to_committed, seek_to_beginning=seek_to_beginning),
    )
    committed = await BatchConsumer.seek_to_committed(fake)  # type: ignore[arg-type]
    assert committed == {TP0: 5, bids1: None, bids2: 0, changelog: None}  # what Faust records, unchanged
    assert sought == [(bids1, bids2)]  # not the changelog: Faust's recovery reads that itself


class Positions:
    """aiokafka's subscription state, as far as `client_positions` reads it."""

    def __init__(self, positions: dict[TP, int]) -> None:
        self.positions = positions
        assignment = SimpleNamespace(tps=positions.keys(), state_value=self.state)
        self._subscription = SimpleNamespace(subscription=SimpleNamespace(assignment=assignment))

    def state(self, tp: TP) -> Any:
        return SimpleNamespace(has_valid_position=True, position=self.positions[tp])


async def test_a_fetch_that_a_refetch_seek_landed_in_starts_where_the_seek_went(monkeypatch: Any) -> None:
    """The engine seeks a partition back to a hole (at 100) while the client's fetch waits; what
    the fetch then returns was fetched from 100, though the position stood at 150 when it began.
    With 100 and 101 transaction markers its first record is 102: a start taken from the
    position before the fetch (150) or the first record (102) would look like a hole again, and
    the engine would seek forever."""
    client = Positions({TP0: 150})
    waiting, landed, resumed = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def fetch(self: Any, consumer: Any, active: Any, timeout: Any = None, max_records: Any = None) -> Any:
        waiting.set()
        await landed.wait()  # waiting for records: the seek lands now
        resumed.set()
        client.positions[TP0] = 104
        return {TP0: [_record(TP0, 102), _record(TP0, 103)]}

    async def seek_wait(self: Any, consumer: Any, partitions: Any) -> None:
        client.positions.update(partitions)  # Faust's seeks at once, then waits for the position,
        landed.set()
        await resumed.wait()  # and the fetch goes on meanwhile

    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_fetch_records", fetch)
    monkeypatch.setattr(faust_aiokafka.AIOKafkaConsumerThread, "_seek_wait", seek_wait)
    thread = CommittedReads.__new__(CommittedReads)
    thread.positions, thread._refetches = ({}, {}), {}
    fetching = asyncio.ensure_future(thread._fetch_records(client, {TP0}))
    await asyncio.wait_for(waiting.wait(), 5)
    await asyncio.wait_for(thread._seek_wait(client, {TP0: 100}), 5)
    await asyncio.wait_for(fetching, 5)
    assert thread.positions == ({TP0: 100}, {TP0: 104})
    landed.set()
    await asyncio.wait_for(thread._fetch_records(client, {TP0}), 5)  # no seek during it: the position before it
    assert thread.positions == ({TP0: 104}, {TP0: 104})
