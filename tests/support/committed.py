"""Where the worker's consumer group stands against the end of the input topics."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams import topics
from streams.topic_admin import partition_counts
from tests.support.stack import APP_ID


async def end_offsets(bootstrap: str, topic: str) -> int:
    return sum((await end_offsets_by_partition(bootstrap, topic)).values())


async def committed_to_end(bootstrap: str) -> bool:
    """Has the worker's group committed every input partition up to its end?"""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(APP_ID)
    finally:
        await admin.close()
    for topic in topics.INPUT_TOPICS:
        ends = await end_offsets_by_partition(bootstrap, topic)
        for tp, end in ends.items():
            meta = committed.get(tp)
            if end and (meta is None or meta.offset < end):
                return False
    return True


async def end_offsets_by_partition(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        count = (await partition_counts(bootstrap, [topic])).get(topic, 0)
        ends: dict[TopicPartition, int] = await consumer.end_offsets([TopicPartition(topic, p) for p in range(count)])
        return ends
    finally:
        await consumer.stop()
