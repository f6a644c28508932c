"""Reading the timer table straight from its compacted changelog topic (no Faust needed):
what replay verifies against and what tests compare the projection with."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import topics
from streams.log_range import read_range
from streams.state import TimerState, decode_state
from streams.topic_admin import partition_counts


async def read_table(
    bootstrap: str, app_id: str, timeout_ms: int = 30_000, **client_options: Any
) -> dict[str, TimerState]:
    """The table as its changelog holds it now: the last value per key, tombstones removed."""
    name = topics.changelog_topic(app_id)
    count = (await partition_counts(bootstrap, [name], **client_options)).get(name, 0)
    if not count:
        return {}
    tps = [TopicPartition(name, p) for p in range(count)]
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest", **client_options
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        table: dict[str, TimerState] = {}
        async for _, records in read_range(consumer, starts, ends, timeout_ms):
            for r in records:
                key = (r.key or b"").decode()
                if r.value:
                    table[key] = decode_state(r.value)
                else:
                    table.pop(key, None)
        return table
    finally:
        await consumer.stop()
