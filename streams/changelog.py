"""Reading the timer table straight from its compacted changelog topic (no Faust needed):
what replay verifies against and what tests compare the projection with."""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import topics
from streams.log_range import read_range
from streams.state import EXPIRED_PREFIX, Expired, TimerState, auction_key, decode_expired, decode_state
from streams.topic_admin import partition_counts


async def read_table(
    bootstrap: str, app_id: str, timeout_ms: int = 30_000, **client_options: Any
) -> dict[str, TimerState]:
    """The timers as the table's changelog holds them now: the last value per key, tombstones
    removed, and the markers of auctions removed after their retention left out."""
    timers, _ = await read_changelog(bootstrap, app_id, timeout_ms, **client_options)
    return timers


async def read_changelog(
    bootstrap: str, app_id: str, timeout_ms: int = 30_000, **client_options: Any
) -> tuple[dict[str, TimerState], dict[str, Expired]]:
    """The table as its changelog holds it now: the timers, and the markers of removed auctions."""
    name = topics.changelog_topic(app_id)
    count = (await partition_counts(bootstrap, [name], **client_options)).get(name, 0)
    if not count:
        return {}, {}
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
        markers: dict[str, Expired] = {}
        async for _, records in read_range(consumer, starts, ends, timeout_ms):
            for r in records:
                raw_key = r.key or b""
                if raw_key.startswith(EXPIRED_PREFIX):
                    key = auction_key(raw_key).decode()
                    if r.value:
                        markers[key] = decode_expired(r.value)
                    else:
                        markers.pop(key, None)
                elif r.value:
                    table[raw_key.decode()] = decode_state(r.value)
                else:
                    table.pop(raw_key.decode(), None)
        return table, markers
    finally:
        await consumer.stop()
