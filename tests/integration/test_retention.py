"""Retention of ended auctions against real Kafka and Redis: removed from the table (a changelog
tombstone) and from Redis once the retention passed; a late bid then gets `expired_auction`;
one retention later the marker goes too and the id is unknown."""

from __future__ import annotations

import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, TopicPartition

from projections.keys import Keys
from streams import events as ev
from streams import topics
from streams.log_range import read_range
from streams.state import expired_key
from streams.topic_admin import partition_counts
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce
from tests.support.stack import APP_ID, Stack

POLICY = ev.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=10_000)
RETENTION_MS = 4_000


async def changelog_of(bootstrap: str, key: bytes) -> list[bytes | None]:
    """Every value the table's changelog holds for `key`, oldest first (None: a tombstone)."""
    name = topics.changelog_topic(APP_ID)
    count = (await partition_counts(bootstrap, [name]))[name]
    tps = [TopicPartition(name, p) for p in range(count)]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        starts, ends = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        return [r.value async for _, records in read_range(consumer, starts, ends) for r in records if r.key == key]
    finally:
        await consumer.stop()


def of(auction_id: str, action: str):
    return lambda d: d["data"]["auction_id"] == auction_id and d["data"]["action"] == action


async def test_an_ended_auction_leaves_the_table_and_redis_after_its_retention(stack: Stack) -> None:
    stack.start_worker(AUCTION_TIMER_ENDED_RETENTION=f"{RETENTION_MS}ms", AUCTION_TIMER_ENDED_TTL_S="2")
    watched = (topics.TIMER_EVENTS, topics.AUDIT, topics.DLQ)
    async with kafka_io(stack.kafka.bootstrap, *watched) as (producer, watch):
        start = now_ms()
        await produce(producer, record(ev.AuctionStarted("old-1", start, start + 1_000, POLICY, "m")))
        [done] = await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed", 60)
        ended_at = done["data"]["ended_at_ms"]
        # Late, but within the retention: audited as a late bid, as before.
        await produce(producer, record(ev.BidPlaced("old-1", "late-1", "u", "1", now_ms())))
        await watch.wait_for(topics.AUDIT, lambda d: d["data"]["reason"] == "after_end", 30)

        [forgotten] = await watch.wait_for(topics.AUDIT, of("old-1", "forgotten"), 60)
        assert forgotten["data"]["detail"]["log_ms"] >= ended_at + RETENTION_MS  # never before the retention
        values = await changelog_of(stack.kafka.bootstrap, b"old-1")
        assert values[-1] is None  # the state's last changelog record is a tombstone
        assert (await changelog_of(stack.kafka.bootstrap, expired_key(b"old-1")))[-1] is not None
        client = aioredis.Redis.from_url(stack.redis.url if stack.redis else "", decode_responses=True)
        try:
            assert not await client.exists(Keys(stack.key_prefix).timer("old-1"))  # expired after ENDED_TTL_S
        finally:
            await client.aclose()

        await produce(producer, record(ev.BidPlaced("old-1", "late-2", "u", "1", now_ms())))
        [dead] = await watch.wait_for(topics.DLQ, lambda d: True, 30)
        assert dead["data"]["reason"] == "expired_auction"
        await watch.wait_for(topics.AUDIT, lambda d: d["data"]["reason"] == "expired_auction", 30)

        # One retention later the marker goes as well: the id is then simply unknown.
        await watch.wait_for(topics.AUDIT, of("old-1", "marker_removed"), 60)
        assert (await changelog_of(stack.kafka.bootstrap, expired_key(b"old-1")))[-1] is None
        await produce(producer, record(ev.BidPlaced("old-1", "late-3", "u", "1", now_ms())))
        dead_letters = await watch.wait_for(topics.DLQ, lambda d: True, 30, count=2)
        assert dead_letters[-1]["data"]["reason"] == "unknown_auction"
