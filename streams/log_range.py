"""Reading a fixed range of Kafka partitions to its end: what replay and the changelog reader share."""

from __future__ import annotations

from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition


async def read_range(
    consumer: AIOKafkaConsumer,
    starts: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
    timeout_ms: int = 10_000,
) -> AsyncIterator[tuple[TopicPartition, list[ConsumerRecord[bytes, bytes]]]]:
    """Batches of each assigned partition's records from its start offset up to (not including)
    its end offset, in partition order. TimeoutError when Kafka stops answering half-way."""
    for tp, start in starts.items():
        consumer.seek(tp, start)
    remaining = {tp for tp in starts if ends[tp] > starts[tp]}
    while remaining:
        batch = await consumer.getmany(*remaining, timeout_ms=timeout_ms, max_records=5_000)
        if not batch:
            raise TimeoutError("Kafka stopped answering before the end of the range")
        for tp, records in batch.items():
            in_range = [r for r in records if r.offset < ends[tp]]
            if len(in_range) < len(records) or await consumer.position(tp) >= ends[tp]:
                remaining.discard(tp)
            yield tp, in_range
