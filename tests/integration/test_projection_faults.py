"""The projection under Redis faults: FLUSHALL, a Sentinel failover, an outage, a worker restart."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel

from infra.redis_server import MASTER_NAME, RedisSentinelGroup
from projections.keys import Keys
from streams import events as ev
from streams import topics
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce
from tests.support.projection import table_and_mismatches
from tests.support.stack import APP_ID, Stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # fault drills: Redis flushed, stopped, failed over; a worker restarted

# Window as long as the extension: every bid while the auction runs extends it again.
LONG = ev.Policy(soft_close_window_ms=900_000, extension_ms=900_000, max_extension_ms=86_400_000)
BID_PACE_S = 0.05  # the load generator's pace (ten bids every 50 ms), not a synchronisation


async def register(
    producer, watch, prefix: str, count: int, ends_in_ms: int, policy: ev.Policy = LONG
) -> dict[str, int]:
    base = now_ms()
    ends = {f"{prefix}-{i}": base + ends_in_ms + 10 * i for i in range(count)}
    await produce(producer, *(record(ev.AuctionStarted(a, base, e, policy, "m")) for a, e in ends.items()))
    await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["auction_id"].startswith(prefix), 90, count=count)
    return ends


async def whole(stack: Stack, client: aioredis.Redis, prefix: str, timeout: float) -> float:
    """Wait until Redis matches the table for `prefix` auctions; returns when (monotonic)."""
    keys = Keys(stack.key_prefix)

    async def probe() -> float:
        table, problems = await table_and_mismatches(stack.kafka.bootstrap, APP_ID, client, keys, prefix)
        return time.monotonic() if table and not problems else 0.0

    return await eventually(probe, timeout, f"the projection of {prefix} auctions to match the table", interval=0.1)


async def test_flushall_is_repaired_within_one_reconciliation_interval(private_stack: Stack) -> None:
    stack = private_stack
    stack.start_worker(AUCTION_TIMER_RECONCILE_INTERVAL_S="2")
    assert stack.redis is not None
    client = aioredis.Redis(port=stack.redis.port, decode_responses=True)
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        await register(producer, watch, "flush", 100, 600_000)
        await whole(stack, client, "flush", 30)
        await client.flushall()
        flushed = time.monotonic()
        repaired = await whole(stack, client, "flush", 30)
        took = repaired - flushed
        print(f"FLUSHALL repaired in {took * 1000:.0f} ms (reconcile interval 2 s)")
        assert took <= 2.0 + 1.0  # one interval, plus the pass itself
        entries: list[Any] = await client.xrange(Keys(stack.key_prefix).reconciliations)  # type: ignore[assignment]
        assert sorted(e[1]["auction_id"] for e in entries) == sorted(f"flush-{i}" for i in range(100))
        assert {e[1]["what"] for e in entries} == {"missing"}
    await client.aclose()


async def test_redis_outage_never_stalls_the_fold_and_loses_nothing(private_stack: Stack) -> None:
    stack = private_stack
    stack.start_worker()
    assert stack.redis is not None
    client = aioredis.Redis(port=stack.redis.port, decode_responses=True)
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        await register(producer, watch, "before", 20, 600_000)
        await whole(stack, client, "before", 30)
        stack.redis.stop()
        down_at = now_ms()
        # While Redis is down: new auctions register, and some complete, on time.
        ends = await register(producer, watch, "during", 20, 2_000)
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed", 15, count=20)
        completed = watch.docs(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed")
        lateness = [d["data"]["ended_at_ms"] - ends[d["data"]["auction_id"]] for d in completed]
        assert max(lateness) <= 1_000, lateness

        async def ten_seconds_down() -> bool:
            return now_ms() - down_at >= 10_000

        await eventually(ten_seconds_down, 30, "Redis to have been down 10 s")
        assert max(d["data"]["server_time_ms"] for d in completed) > down_at  # all this happened while down
        stack.redis.start()
        await whole(stack, client, "before", 30)
        await whole(stack, client, "during", 30)
        print(f"with Redis down: completion lateness max {max(lateness)} ms")
    await client.aclose()


async def test_worker_restart_leaves_projection_and_table_agreeing(stack: Stack) -> None:
    worker = stack.start_worker()
    assert stack.redis is not None
    client = aioredis.Redis(port=stack.redis.port, decode_responses=True)
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        ends = await register(producer, watch, "restart", 30, 4_000, ev.Policy(2_000, 2_000, 60_000))
        worker.stop()
        stack.start_worker()
        # Bids extend some while the new worker takes over; all complete; Redis agrees.
        for auction_id, end in list(ends.items())[:10]:
            await produce(producer, record(ev.BidPlaced(auction_id, f"b-{auction_id}", "u", "1", end - 100)))
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed", 60, count=30)
        await whole(stack, client, "restart", 30)
    await client.aclose()


async def test_sentinel_failover_while_bids_extend(sentinel_stack: Stack, redis_sentinel: RedisSentinelGroup) -> None:
    stack = sentinel_stack
    stack.start_worker(AUCTION_TIMER_RECONCILE_INTERVAL_S="1")
    sentinel = Sentinel([("127.0.0.1", p) for p in redis_sentinel.sentinel_ports], socket_timeout=1)
    admin = redis_sentinel.users[0]
    client = sentinel.master_for(
        MASTER_NAME, username=admin.name, password=admin.password, decode_responses=True, socket_timeout=1
    )
    keys = Keys(stack.key_prefix)
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        ends = await register(producer, watch, "fo", 100, 600_000)
        await whole(stack, client, "fo", 30)
        stop = asyncio.Event()

        async def bidder() -> int:
            sent = 0
            while not stop.is_set():
                batch = list(ends)[sent % 100 : sent % 100 + 10]
                await produce(producer, *(record(ev.BidPlaced(a, f"b{sent}-{a}", "u", "1", now_ms())) for a in batch))
                sent += len(batch)
                await asyncio.sleep(BID_PACE_S)
            return sent

        bids = asyncio.create_task(bidder())
        old = redis_sentinel.current_primary_port()
        redis_sentinel.kill_primary()
        await asyncio.to_thread(redis_sentinel.wait_failover, old)
        promoted = time.monotonic()

        async def extending_after_promotion() -> bool:
            since = now_ms() - 500
            return bool(watch.docs(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "extended"
                                   and d["data"]["server_time_ms"] > since))  # fmt: skip

        await eventually(extending_after_promotion, 30, "bids to keep extending after the failover")
        stop.set()
        sent = await bids
        repaired = await whole(stack, client, "fo", 30)
        took = repaired - promoted
        table, _ = await table_and_mismatches(stack.kafka.bootstrap, APP_ID, client, keys, "fo")
        print(f"Sentinel failover with {sent} bids in flight: projection whole {took * 1000:.0f} ms after promotion")
        assert took <= 5.0
        # Remaining duration read from Redis vs the table, per auction (the product's 5 s bar).
        now = now_ms()
        stored = [await client.hget(keys.timer(a), "ends_at_ms") for a in table]
        errors = [abs((int(r) - now) - (s.ends_at_ms - now)) for r, s in zip(stored, table.values(), strict=True)]
        print(f"remaining-duration error across {len(errors)} auctions: max {max(errors)} ms")
        assert len(errors) == 100 and max(errors) <= 5_000
    await client.aclose()
