"""The projection under Redis faults: FLUSHALL, a Sentinel failover, an outage, a worker restart."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import pytest
import redis.asyncio as aioredis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import RedisError, ResponseError

from infra.redis_server import MASTER_NAME, RedisSentinelGroup
from projections.keys import Keys
from projections.store import ProjectionStore, Stored
from streams import events as ev
from streams import topics
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce
from tests.support.projection import ENDED_TTL_S, table_and_mismatches
from tests.support.stack import APP_ID, Stack
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # fault drills: Redis flushed, stopped, failed over; a worker restarted

# Window as long as the extension: every bid while the auction runs extends it again.
LONG = ev.Policy(soft_close_window_ms=900_000, extension_ms=900_000, max_extension_ms=86_400_000)
BID_PACE_S = 0.05  # the load generator's pace (ten bids every 50 ms), not a synchronisation
SAMPLE_EVERY_S = 0.02  # how often the failover test reads Redis (a pace, not a synchronisation)
GENEROUS_LATENESS_MS = 5_000  # generous: far above the scheduling delays of a loaded machine


async def register(
    producer, watch, prefix: str, count: int, ends_in_ms: int, policy: ev.Policy = LONG
) -> dict[str, int]:
    base = now_ms()
    ends = {f"{prefix}-{i}": base + ends_in_ms + 10 * i for i in range(count)}
    await produce(producer, *(record(ev.AuctionStarted(a, base, e, policy, "m")) for a, e in ends.items()))
    await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["auction_id"].startswith(prefix), 90, count=count)
    return ends


def held_states(read: dict[str, Stored | ResponseError]) -> dict[str, dict[str, Any]]:
    """The hash of each auction Redis holds one for (none of these tests' auctions is refused)."""
    assert not [a for a, r in read.items() if isinstance(r, ResponseError)], read
    return {a: r[0] for a, r in read.items() if not isinstance(r, ResponseError) and r[0] is not None}


async def whole(stack: Stack, client: aioredis.Redis, prefix: str, timeout: float) -> float:
    """Wait until Redis matches the table for `prefix` auctions; returns when (monotonic)."""
    keys = Keys(stack.key_prefix)

    async def probe() -> float:
        table, problems = await table_and_mismatches(stack.kafka.bootstrap, APP_ID, client, keys, prefix)
        return time.monotonic() if table and not problems else 0.0

    return await eventually(probe, timeout, f"the projection of {prefix} auctions to match the table", interval=0.1)


async def test_flushall_is_repaired_by_the_next_reconciliation_passes(private_stack: Stack) -> None:
    stack = private_stack
    stack.start_worker(AUCTION_TIMER_RECONCILE_INTERVAL_S="2")
    assert stack.redis is not None
    client = aioredis.Redis(port=stack.redis.port, decode_responses=True)
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        await register(producer, watch, "flush", 100, 600_000)
        await whole(stack, client, "flush", 60)
        await client.flushall()
        flushed = time.monotonic()
        repaired = await whole(stack, client, "flush", 60)
        print(f"FLUSHALL repaired in {(repaired - flushed) * 1000:.0f} ms (reconcile interval 2 s)")

        # The reconciler, not something slower, put every auction back: one correction each, from
        # the pass after the flush (and the one after that, when the flush landed mid-pass). A pass
        # streams its corrections after writing them, so the stream may lag the repair a little.
        async def streamed() -> list[Any]:
            entries: list[Any] = await client.xrange(Keys(stack.key_prefix).reconciliations)  # type: ignore[assignment]
            return entries if len(entries) >= 100 else []

        entries = await eventually(streamed, 30, "the corrections in the reconciliations stream")
        assert sorted(e[1]["auction_id"] for e in entries) == sorted(f"flush-{i}" for i in range(100))
        assert {e[1]["what"] for e in entries} == {"missing"}
        passes = sorted({int(e[1]["at_ms"]) for e in entries})
        assert len(passes) <= 2, passes
    await client.aclose()


async def test_redis_outage_never_stalls_the_fold_and_loses_nothing(private_stack: Stack) -> None:
    stack = private_stack
    stack.start_worker()
    assert stack.redis is not None
    client = aioredis.Redis(port=stack.redis.port, decode_responses=True)
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        await register(producer, watch, "before", 20, 600_000)
        await whole(stack, client, "before", 60)
        stack.redis.stop()
        down_at = now_ms()
        # While Redis is down: new auctions register, and complete, on time. (Waiting for them
        # with Redis still down is the proof the fold does not wait for Redis.)
        ends = await register(producer, watch, "during", 20, 2_000)
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed", 60, count=20)
        completed = watch.docs(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed")
        registered = {
            d["data"]["auction_id"]: d["data"]["server_time_ms"]
            for d in watch.docs(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "registered")
        }
        # Lateness from when each deadline could first fire: its end, or its registration when the
        # worker met it already due (all exact, from the records).
        lateness = [
            d["data"]["ended_at_ms"] - max(ends[d["data"]["auction_id"]], registered[d["data"]["auction_id"]])
            for d in completed
        ]
        assert all(d["data"]["ended_at_ms"] >= ends[d["data"]["auction_id"]] for d in completed)  # never early
        assert max(lateness) <= GENEROUS_LATENESS_MS, lateness  # not held up by Redis timeouts
        assert min(d["data"]["server_time_ms"] for d in completed) > down_at

        async def ten_seconds_down() -> bool:
            return now_ms() - down_at >= 10_000

        await eventually(ten_seconds_down, 30, "Redis to have been down 10 s")
        stack.redis.start()
        await whole(stack, client, "before", 60)
        await whole(stack, client, "during", 60)
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
        # Bids while the new worker takes over, placed now (one in its auction's soft-close window
        # extends it): either way all complete, and Redis agrees with the table.
        for auction_id in list(ends)[:10]:
            await produce(producer, record(ev.BidPlaced(auction_id, f"b-{auction_id}", "u", "1", now_ms())))
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed", 120, count=30)
        await whole(stack, client, "restart", 60)
    await client.aclose()


async def test_sentinel_failover_while_bids_extend(sentinel_stack: Stack, redis_sentinel: RedisSentinelGroup) -> None:
    """While bids keep extending 100 auctions, the Redis primary is killed. Redis only ever holds
    states the worker published; from the promotion on, never one older than it held before; and
    it ends whole: each auction's remaining time read from Redis is the log's, at any instant.
    (How soon after the promotion it is whole is bench/recovery.py's figure, not an assertion.)"""
    stack = sentinel_stack
    stack.start_worker(AUCTION_TIMER_RECONCILE_INTERVAL_S="1")
    sentinel = Sentinel([("127.0.0.1", p) for p in redis_sentinel.sentinel_ports], socket_timeout=1)
    admin = redis_sentinel.users[0]
    client = sentinel.master_for(
        MASTER_NAME, username=admin.name, password=admin.password, decode_responses=True, socket_timeout=1
    )
    keys = Keys(stack.key_prefix)
    store = ProjectionStore(client, keys, ENDED_TTL_S)
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        ends = await register(producer, watch, "fo", 100, 600_000)
        await whole(stack, client, "fo", 60)
        stop_bidding, stop_sampling = asyncio.Event(), asyncio.Event()
        samples: list[tuple[int, dict[str, tuple[int, int]]]] = []  # (read at, auction -> (version, ends_at))

        async def bidder() -> int:
            sent = 0
            while not stop_bidding.is_set():
                batch = list(ends)[sent % 100 : sent % 100 + 10]
                await produce(producer, *(record(ev.BidPlaced(a, f"b{sent}-{a}", "u", "1", now_ms())) for a in batch))
                sent += len(batch)
                await asyncio.sleep(BID_PACE_S)
            return sent

        async def sampler() -> None:
            while not stop_sampling.is_set():
                with contextlib.suppress(RedisError, OSError):  # the client finding the new primary
                    read_at = now_ms()
                    found = await store.read_many(ends)
                    samples.append(
                        (read_at, {a: (h["version"], h["ends_at_ms"]) for a, h in held_states(found).items()})
                    )
                await asyncio.sleep(SAMPLE_EVERY_S)

        bids, reads = asyncio.create_task(bidder()), asyncio.create_task(sampler())
        old = redis_sentinel.current_primary_port()
        redis_sentinel.kill_primary()
        promoted_ms = int(await asyncio.to_thread(redis_sentinel.wait_failover, old) * 1000)
        promoted = time.monotonic()

        async def every_auction_extended_after_promotion() -> bool:
            extended = watch.docs(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "extended"
                                  and d["data"]["server_time_ms"] > promoted_ms)  # fmt: skip
            return {d["data"]["auction_id"] for d in extended} == set(ends)

        await eventually(every_auction_extended_after_promotion, 60, "bids to extend every auction after the failover")
        stop_bidding.set()
        sent = await bids
        repaired = await whole(stack, client, "fo", 60)
        stop_sampling.set()
        await reads
        print(f"Sentinel failover with {sent} bids in flight: projection whole {(repaired - promoted) * 1000:.0f} ms "
              f"after promotion")  # fmt: skip
        table, _ = await table_and_mismatches(stack.kafka.bootstrap, APP_ID, client, keys, "fo")
        assert len(table) == 100

        # The log: every version of every auction the worker published, up to the table's.
        def log_has_the_tables_versions() -> dict[tuple[str, int], dict[str, Any]]:
            log = {(d["data"]["auction_id"], d["data"]["version"]): d["data"] for d in watch.docs(topics.TIMER_EVENTS)}
            return log if all((a, s.version) in log for a, s in table.items()) else {}

        log = await eventually(lambda: asyncio.sleep(0, result=log_has_the_tables_versions()), 60, "the whole log")
        latest = {a: log[(a, s.version)] for a, s in table.items()}
        after = [(at, read) for at, read in samples if at > promoted_ms]
        assert after, "Redis never answered after the promotion"
        for _, read in samples:
            for auction_id, (version, ends_at) in read.items():
                assert log[(auction_id, version)]["ends_at_ms"] == ends_at  # a state the worker published
        # From the promotion on, Redis only moves forward (across it, writes lost with the old primary
        # may make a read older than the one before).
        held: dict[str, int] = {}
        for _, read in after:
            for auction_id, (version, _) in read.items():
                assert version >= held.get(auction_id, 0), f"{auction_id} went back to v{version}"
                held[auction_id] = version
        final = await store.read_many(ends)
        assert len(held_states(final)) == len(ends)
        for auction_id, stored in held_states(final).items():
            assert (stored["version"], stored["ends_at_ms"]) == (latest[auction_id]["version"],
                                                                 latest[auction_id]["ends_at_ms"])  # fmt: skip
    await client.aclose()
