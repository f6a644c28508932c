"""Peer of the ticks benchmark: the same periodic ticks as the worker's, from a plain loop.

`python bench/peers/ticks_plain.py BOOTSTRAP TOPIC INTERVAL_S` folds the registrations in
offers.auction.started (our processor over in-memory states, as the worker does), then sends a
tick of every live auction every INTERVAL_S, each in the phase of its fold, built by
`streams.outputs.tick` and sent to TOPIC with the worker's tick producer settings (acks=all,
idempotent, linger 10 ms), every result checked; until SIGTERM. What it does per tick is the
least any tick sender does: a heap pop, a record, a send."""

from __future__ import annotations

import asyncio
import heapq
import signal
import sys

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from streams import outputs, topics
from streams.clock import wall_ms
from streams.message import LOG_APPEND_TIME, Message
from streams.processor import TimerProcessor
from streams.replay import MemoryStates
from streams.state import TimerState
from streams.topic_admin import partition_counts


async def registered(bootstrap: str) -> list[TimerState]:
    count = (await partition_counts(bootstrap, [topics.AUCTION_STARTED]))[topics.AUCTION_STARTED]
    tps = [TopicPartition(topics.AUCTION_STARTED, p) for p in range(count)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    try:
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        states = MemoryStates()
        processor = TimerProcessor(states, len(tps), 65_536)
        while [tp for tp, end in ends.items() if await consumer.position(tp) < end]:
            for tp, records in (await consumer.getmany(timeout_ms=1_000)).items():
                for r in records:
                    processor.process(Message(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value,
                                              r.timestamp_type == LOG_APPEND_TIME))  # fmt: skip
        return [s for s in states.states.values() if s.live]
    finally:
        await consumer.stop()


async def tick(bootstrap: str, topic: str, interval_ms: int, stop: asyncio.Event) -> None:
    states = await registered(bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, linger_ms=10)
    await producer.start()
    failed: list[BaseException] = []

    def check(future: asyncio.Future[object]) -> None:
        if not future.cancelled() and future.exception() is not None:
            failed.append(future.exception())  # type: ignore[arg-type]

    try:
        now = wall_ms()
        # Each auction's phase is when it was folded, as in the worker; here every one was folded
        # before the first tick, so they tick together: one burst, one batch of sends an interval.
        due = [(now + interval_ms, i, 1) for i in range(len(states))]
        heapq.heapify(due)
        while not stop.is_set() and not failed:
            now = wall_ms()
            while due[0][0] <= now:
                at, i, seq = heapq.heappop(due)
                record = outputs.tick(states[i], seq, now)
                (await producer.send(topic, record.value, key=record.key)).add_done_callback(check)
                # Keep the phase; after a stall, skip the missed ticks rather than burst them.
                heapq.heappush(due, (at + interval_ms if now - at < interval_ms else now + interval_ms, i, seq + 1))
            await asyncio.sleep((due[0][0] - now) / 1000)
        if failed:
            raise failed[0]
    finally:
        await producer.stop()


async def main(bootstrap: str, topic: str, interval_s: str) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await tick(bootstrap, topic, int(float(interval_s) * 1000), stop)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:4]))
