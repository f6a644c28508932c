"""Faust delivering fetched batches instead of single records.

Faust's per-message path (a Message, a conductor hop, a stream step, sensors, acks) costs
about 200 µs per record on this class of machine, more than the fold itself. `BatchConsumer`
hands Faust one message per fetched batch of one partition (the records ride along), so that
cost is paid per batch, and the agent folds the records itself. Offsets stay Faust's to
commit: a batch is acknowledged only by the worker's engine, once every record in it has
been folded and everything it caused is in Kafka, and batches of a partition are
acknowledged in order, so the committable offset is simply the last acknowledged one + 1.
Faust's own paths that acknowledge messages it skips (a rebalance in progress, an old
generation) cannot move the offset: only `acknowledge()` counts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiokafka import ConsumerRecord
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from faust.types.tuples import ConsumerMessage


class BatchMessage(ConsumerMessage):
    """One fetched batch of one partition; `offset` is its last record's, `first` its first's."""

    __slots__ = ("first", "folded", "records")

    def __init__(self, tp: TP, records: Sequence[ConsumerRecord[bytes, bytes]], generation_id: int) -> None:
        last = records[-1]
        super().__init__(
            tp.topic, tp.partition, last.offset, last.timestamp / 1000, last.timestamp_type,
            None, None, b"", None, 0, 0, tp, generation_id=generation_id,
        )  # fmt: skip
        self.records = records
        self.first = records[0].offset
        self.folded = False

    def on_final_ack(self, consumer: Any) -> bool:
        if not self.folded:
            return False  # Faust skipping it (rebalance): it was not folded, so not committable
        consumer.batch_acked(self)
        return bool(consumer.ack(self))


def acknowledge(event: Any) -> None:
    """The engine folded every record of this batch and Kafka has all they caused."""
    message: BatchMessage = event.message
    message.folded = True
    event.ack()


class BatchConsumer(faust_aiokafka.Consumer):
    """Batches for the topics named in `batched` (the inputs); single messages for the rest
    (the table's changelog, which Faust's recovery and standby replicas read record by record).
    A partition's commit moves only over batches acknowledged one after another from where it
    stands: a batch that was never acknowledged (lost to a bug) stops it rather than being
    skipped."""

    batched: frozenset[str] = frozenset()

    def __post_init__(self) -> None:
        super().__post_init__()
        self._batches: dict[TP, dict[int, int]] = {}  # per partition: acknowledged first -> last offset

    def batch_acked(self, message: BatchMessage) -> None:
        self._batches.setdefault(message.tp, {})[message.first] = message.offset

    async def on_partitions_revoked(self, revoked: set[TP]) -> None:
        for tp in revoked:  # folded again by the next owner, with batches of other bounds
            self._batches.pop(tp, None)
        await super().on_partitions_revoked(revoked)

    async def getmany(self, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
        records, active_partitions = await self._wait_next_records(timeout)
        if records is None or self.should_stop:
            return
        generation_id = self.app.consumer_generation_id
        if not self.flow_active:
            try:
                await self.perform_seek()
            except Exception as exc:  # noqa: BLE001 - as Faust's own getmany: the next round seeks again
                self.log.warning(f"exception performing seek when flow not active {exc}")
            return
        for tp, batch in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            wanted = active_partitions is None or tp in active_partitions or tp in self._buffered_partitions
            if not (batch and wanted):
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if tp.topic in self.batched:
                yield tp, BatchMessage(tp, batch, generation_id)
            else:
                for record in batch:
                    yield tp, self._to_message(tp, record)

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # Faust sees a gap between consecutive batches (a message's offset is its batch's last
        # record's) and would keep one interval per batch, forever, rebuilding its tree each
        # time. Batched partitions track their acknowledged runs in `_batches` instead.
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
            position = batches.pop(position) + 1
        return position if position > start else None


def batch_transport(topics: frozenset[str]) -> type[faust_aiokafka.Transport]:
    """A Faust transport whose consumer batches `topics`."""
    consumer = type("InputBatchConsumer", (BatchConsumer,), {"batched": topics})
    return type("BatchTransport", (faust_aiokafka.Transport,), {"Consumer": consumer})
