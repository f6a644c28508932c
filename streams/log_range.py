"""Reading a fixed range of Kafka partitions to its end: what replay and the changelog reader share."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

POLL_MS = 200


async def read_range(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    timeout_ms: int = 10_000,
) -> AsyncIterator[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]:
    """Batches of each assigned partition's records from its start offset up to (not including)
    its end offset. A partition is done when the consumer's position reaches its end, which may
    lie past its last record (transaction markers). TimeoutError when Kafka stops answering
    half-way (no record and no position moved for `timeout_ms`)."""
    for tp, start in starts.items():
        consumer.seek(tp, start)
    remaining = {tp for tp in starts if ends[tp] > starts[tp]}
    quiet_since = time.monotonic()
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=POLL_MS, max_records=5_000)
        for tp, records in batch.items():
            in_range = [r for r in records if r.offset < ends[tp]]
            if len(in_range) < len(records):
                remaining.discard(tp)
            yield tp, in_range
        done = {tp for tp in remaining if await consumer.position(tp) >= ends[tp]}
        remaining -= done
        if batch or done:
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > timeout_ms / 1000:
            raise TimeoutError("Kafka stopped answering before the end of the range")
