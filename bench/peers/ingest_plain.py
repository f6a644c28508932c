"""Peer of the ingest benchmark: a plain aiokafka loop around our `TimerProcessor`.

`python bench/peers/ingest_plain.py BOOTSTRAP GROUP PREFIX` consumes the four input topics in
group GROUP from the start, forever (the bench stops it with SIGTERM). Per getmany batch: the
records go into one `Merger` per partition number (the worker's merge: log time, then topic
rank); a partition whose position has reached the high watermark of its last fetch is caught
up; what the mergers release is folded by the processor over plain in-memory states; the
outputs and one changelog record per changed auction go to PREFIX + the contract's topic
names (acks=all, idempotent, linger 5 ms); after a flush whose every result is checked, the
offsets of what was folded are committed. At least once, like the worker, without its engine.
The high watermark of a fetch stands for an end-offset lookup: here the whole input is in the
log before the loop starts."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import OffsetAndMetadata

from streams import topics
from streams.message import LOG_APPEND_TIME, Message
from streams.order import Merger
from streams.processor import TimerProcessor
from streams.replay import MemoryStates
from streams.state import TimerState, encode_state

RANK = {name: rank for rank, name in enumerate(topics.INPUT_TOPICS)}


class ChangedStates(MemoryStates):
    """In-memory states that remember which auctions changed since the last changelog write."""

    def __init__(self) -> None:
        super().__init__()
        self.changed: set[bytes] = set()

    def put(self, key: bytes, state: TimerState) -> None:
        super().put(key, state)
        self.changed.add(key)


async def run(bootstrap: str, group: str, prefix: str, stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        *topics.INPUT_TOPICS, bootstrap_servers=bootstrap, group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )  # fmt: skip
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=5, max_batch_size=256 * 1024
    )
    await consumer.start()
    await producer.start()
    states = ChangedStates()
    processor: TimerProcessor | None = None
    mergers: dict[int, Merger[Message]] = {}
    newest_ms = 0
    try:
        while not stop.is_set():
            fetched = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for tp, records in fetched.items():
                merger = mergers.setdefault(tp.partition, Merger(len(topics.INPUT_TOPICS)))
                merger.add(RANK[tp.topic], [
                    (r.timestamp, r.offset, Message(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value,
                                                    r.timestamp_type == LOG_APPEND_TIME))
                    for r in records
                ])  # fmt: skip
                newest_ms = max(newest_ms, records[-1].timestamp)
            for tp in consumer.assignment():
                highwater = consumer.highwater(tp)
                if highwater is not None and await consumer.position(tp) >= highwater:
                    mergers.setdefault(tp.partition, Merger(len(topics.INPUT_TOPICS))).caught_up(
                        RANK[tp.topic], newest_ms
                    )
            if processor is None:
                partitions = consumer.partitions_for_topic(topics.BID_PLACED)
                processor = TimerProcessor(states, len(partitions or ()), 65_536)
            folded: dict[TopicPartition, int] = {}
            futures = []
            for merger in mergers.values():
                for msg in merger.pop_ready():
                    for rec in processor.process(msg).records:
                        futures.append(await producer.send(prefix + rec.topic, rec.value, key=rec.key))
                    folded[TopicPartition(msg.topic, msg.partition)] = msg.offset + 1
            for key in states.changed:
                futures.append(await producer.send(prefix + "changelog", encode_state(states.states[key]), key=key))
            states.changed.clear()
            if not folded:
                continue
            await producer.flush()
            for future in futures:
                future.result()  # raises if Kafka did not take a record: nothing is committed then
            await consumer.commit({tp: OffsetAndMetadata(offset, "") for tp, offset in folded.items()})
    finally:
        await producer.stop()
        await consumer.stop()


async def main(bootstrap: str, group: str, prefix: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await run(bootstrap, group, prefix, stop)


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(main(*sys.argv[1:4]))
