"""Faust delivering fetched batches instead of single records.

Faust's per-message path (a Message, a conductor hop, a stream step, sensors, acks) costs
about 200 µs per record on this class of machine, more than the fold itself. `BatchConsumer`
hands Faust one message per fetched batch of one partition (the records ride along), so that
cost is paid per batch, and the agent folds the records itself. Offsets stay Faust's to
commit: a batch is acknowledged only by the worker's engine, once every record in it has
been folded and everything it caused is in Kafka. Each batch carries the consumer's position
before and after it (`start`, `end`), so a partition's commit moves over acknowledged batches
chained end to start, whatever lies between their records: transaction markers and aborted
batches, which the client skips, are gaps in the offsets, not holes. A position that moves
over markers alone comes as a batch without records, so the commit and the engine's view of
the partition's end move over them too. Faust's own paths that acknowledge messages it skips
(a rebalance in progress, an old generation) cannot move the offset: only `acknowledge()`
counts, and only for a partition still assigned in the batch's generation.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from aiokafka.errors import IllegalStateError, KafkaError
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ConsumerMessage

from streams.static_leave import leave_when_closing


class BatchMessage(ConsumerMessage):
    """One fetched batch of one partition, maybe without records (markers only): the consumer's
    position was `start` before it and is `end` after it."""

    __slots__ = ("end", "folded", "records", "start")

    def __init__(
        self, tp: TP, records: Sequence[ConsumerRecord[bytes, bytes]], generation_id: int, start: int, end: int
    ) -> None:
        timestamp, timestamp_type = (records[-1].timestamp, records[-1].timestamp_type) if records else (0, 0)
        super().__init__(
            tp.topic, tp.partition, end - 1, timestamp / 1000, timestamp_type,
            None, None, b"", None, 0, 0, tp, generation_id=generation_id,
        )  # fmt: skip
        self.records = records
        self.start = start
        self.end = end
        self.folded = False

    def on_final_ack(self, consumer: Any) -> bool:
        if not self.folded:
            return False  # Faust skipping it (rebalance): it was not folded, so not committable
        if not consumer.batch_acked(self):
            return False  # of a partition revoked since: its next owner folds it again
        return bool(consumer.ack(self))


def acknowledge(event: Any, start: int | None) -> None:
    """The engine folded every record of this batch from position `start` on (before it: a copy
    of records it had received already) and Kafka has all they caused (or it has no records)."""
    message: BatchMessage = event.message
    if start is not None:
        message.start = start
    message.folded = True
    event.ack()


def client_positions(client: Any) -> dict[TP, int]:
    """aiokafka's position of every assigned partition that has one."""
    subscription = client._subscription.subscription
    assignment = subscription.assignment if subscription is not None else None
    if assignment is None:
        return {}
    out = {}
    for tp in assignment.tps:
        state = assignment.state_value(tp)
        if state is not None and state.has_valid_position:
            out[TP(tp.topic, tp.partition)] = state.position
    return out


class CommittedReads(faust_aiokafka.AIOKafkaConsumerThread):
    """The worker's Kafka client, on its own thread and event loop.

    It reads committed records only (`read_committed`): an upstream service writing in
    transactions may abort some, and what it aborted is not in the log the worker folds (nor in
    what replay reads). Without transactions, nothing changes.

    It notes the positions before and after each fetch (`positions`) on the thread where fetches
    and seeks run, so a seek can land only while the fetch waits, and what the fetch returns was
    fetched after it: the engine's refetch seeks (`seek_wait`) are counted, and a fetch that one
    landed in starts where it sought, not where the position stood when the fetch began."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.positions: tuple[dict[TP, int], dict[TP, int]] = ({}, {})
        self._refetches: dict[TP, tuple[int, int]] = {}  # per partition: seeks so far, the last offset

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        consumer._isolation_level = "read_committed"  # read by start(), when it makes its fetcher
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: set[TP],
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Mapping[TP, list[Any]]:
        # Faust's drain loop fetches one batch of records at a time, so `positions` belong to the
        # fetch whose records getmany hands on (a fetch cancelled midway would break that).
        seeks = dict(self._refetches)
        before = client_positions(consumer)
        records = await super()._fetch_records(consumer, active_partitions, timeout, max_records)
        for tp, (count, offset) in self._refetches.items():
            if seeks.get(tp, (0, 0))[0] != count:
                before[tp] = offset  # it landed while the fetch waited: what came of tp came from there
        self.positions = (before, client_positions(consumer))
        return records

    async def on_start(self) -> None:
        await super().on_start()
        # A stop on purpose hands the partitions on at once (see streams/static_leave.py). Installed
        # at start: Faust closes the client on other paths too (a rebalance while stopping).
        assert self._consumer is not None  # made by super().on_start()
        leave_when_closing(self._consumer._coordinator)

    async def _seek_wait(self, consumer: Any, partitions: Mapping[TP, int]) -> None:
        for tp, offset in partitions.items():  # counted in the same step as the seek itself
            self._refetches[tp] = (self._refetches.get(tp, (0, 0))[0] + 1, offset)
        await super()._seek_wait(consumer, partitions)


class BatchConsumer(faust_aiokafka.Consumer):
    """Batches for the topics named in `batched` (the inputs); single messages for the rest
    (the table's changelog, which Faust's recovery and standby replicas read record by record).
    A partition's commit moves only over batches acknowledged one after another from where it
    stands: a batch that was never acknowledged (lost to a bug) stops it rather than being
    skipped."""

    batched: frozenset[str] = frozenset()

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return CommittedReads(self, loop=self.loop, beacon=self.beacon)

    def __post_init__(self) -> None:
        super().__post_init__()
        self._batches: dict[TP, dict[int, int]] = {}  # per partition: acknowledged start -> end
        self._revoked: set[TP] = set()  # since the latest assignment
        self._fetching: int | None = None  # the generation when the current fetch began (see _getmany)

    def batch_acked(self, message: BatchMessage) -> bool:
        """Record an acknowledged batch; False for one of an earlier assignment."""
        tp = message.tp
        if tp in self._revoked or message.generation_id != self.app.consumer_generation_id:
            return False
        self._batches.setdefault(tp, {})[message.start] = message.end
        return True

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:  # folded again by the next owner, with batches of other bounds
            self._batches.pop(tp, None)
        self._revoked |= revoked
        await super().on_partitions_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        self._revoked -= assigned
        await super().on_partitions_assigned(assigned, generation_id)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        """Faust drops what it fetched while a rebalance or a pause of its flow was under way and
        seeks back to the committed offsets to fetch it again; aiokafka seeks only where an offset
        above 0 is committed, so an input partition nobody committed yet would keep its position
        past the dropped records. Those go back to the log's start, where the group starts them."""
        committed: Mapping[TP, int] = await self._thread.seek_to_committed()
        fresh = [tp for tp, offset in committed.items() if tp.topic in self.batched and not offset]
        if fresh:
            try:
                await self._thread.seek_to_beginning(*fresh)
            except (IllegalStateError, KafkaError) as exc:  # revoked meanwhile: the next owner starts them
                self.log.warning(f"seeking uncommitted input partitions to their start failed: {exc!r}")
        return committed

    def input_positions(self) -> dict[TP, int]:
        """The client's position of every assigned input partition that has one (read from this
        thread: for the engine's look at partitions that stand still, not for a batch's bounds)."""
        client = getattr(getattr(self, "_thread", None), "_consumer", None)
        if client is None:
            return {}  # not started yet
        return {tp: p for tp, p in client_positions(client).items() if tp.topic in self.batched}

    async def _getmany(self, active_partitions: set[TP] | None, timeout: float) -> Any:
        self._fetching = self.app.consumer_generation_id
        return await super()._getmany(active_partitions, timeout)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        self._fetching = None
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        if not self.flow_active:
            try:
                await self.perform_seek()
            except Exception as exc:  # noqa: BLE001 - as Faust's own getmany: the next round seeks again
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return
        if self._fetching is None:
            return  # nothing was fetched (no active partition)
        generation_id = self._fetching
        if self.app.consumer_generation_id != generation_id:
            return  # a rebalance during the fetch: Faust seeks back, these come again
        # The positions before and after the fetch bound what it returned (a seek of Faust's in
        # between moves them back: `start` takes the lower bound; the engine takes a batch only
        # from where it has received its partition to).
        before, after = self._thread.positions
        after = {tp: p for tp, p in after.items() if tp.topic in self.batched}
        for tp, batch in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                return
            if not batch:
                continue
            batched = tp.topic in self.batched
            # Faust skips what a partition paused during the fetch returned; the client's position
            # has moved past it, so for an input that would lose it. The engine buffers it instead.
            wanted = active_partitions is None or tp in active_partitions or tp in self._buffered_partitions
            if not (batched or wanted):
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if batched:
                start = min(before.get(tp, batch[0].offset), batch[0].offset)
                end = max(after.get(tp, 0), batch[-1].offset + 1)
                self._hand_on(tp)
                yield tp, BatchMessage(tp, batch, generation_id, start, end)
            else:
                for record in batch:
                    yield tp, self._to_message(tp, record)
        for tp, end in after.items():  # positions moved over transaction markers only
            start = before.get(tp)
            if tp not in records and start is not None and end > start and self.flow_active:
                self._hand_on(tp)
                yield tp, BatchMessage(tp, [], generation_id, start, end)

    def _hand_on(self, tp: TP) -> None:
        # Faust drops a message whose offset is below the last it read of its partition. After a
        # seek back (the engine's refetch) a batch fetched before it may pass first and raise that
        # mark again, and the records fetched anew would be dropped. The engine leaves out what it
        # received already, so an input's batch is always handed on.
        self._read_offset.pop(tp, None)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust sees a gap between consecutive batches (a message's offset is its batch's last
        # record's) and would keep one interval per batch, forever, rebuilding its tree each
        # time. Batched partitions chain their acknowledged batches in `_batches` instead.
        if tp.topic not in self.batched:
            await super()._add_gap(tp, offset_from, offset_to)

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic not in self.batched:
            return super()._new_offset(tp)
        self._acked[tp].clear()
        self._acked_index[tp].clear()
        batches = self._batches.get(tp, {})
        committed = self._committed_offset[tp]
        position = committed if committed is not None else min(batches, default=None)
        if position is None:
            return None
        start = position
        while position in batches:
            position = batches.pop(position)
        return position if position > start else None


def batch_transport(topics: frozenset[str]) -> type[faust_aiokafka.Transport]:
    """A Faust transport whose consumer batches `topics`."""
    consumer = type("InputBatchConsumer", (BatchConsumer,), {"batched": topics})
    return type("BatchTransport", (faust_aiokafka.Transport,), {"Consumer": consumer})
