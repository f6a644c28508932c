"""Replay from the log alone: equal to the live table, verifying the projection, timelines,
and a rebuilt projection equal to the live one."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import orjson
import pytest
import pytest_asyncio
import redis.asyncio as aioredis

from infra.kafka_server import KafkaCluster
from infra.redis_server import RedisServer
from projections.keys import Keys
from projections.store import FIELDS
from streams import events as ev
from streams import topics
from streams.changelog import read_table
from streams.replay import Progress, Window, read_inputs, reprocess
from tests.support.events import now_ms, raw_event, record
from tests.support.kafka import kafka_io, produce
from tests.support.projection import mismatches
from tests.support.stack import APP_ID, ROOT, Stack
from tests.support.waiting import eventually

POLICY = ev.Policy(soft_close_window_ms=3_000, extension_ms=3_000, max_extension_ms=60_000)
# Every bid before the end extends it to the bid plus 10 s.
EXTENDING = ev.Policy(soft_close_window_ms=60_000, extension_ms=10_000, max_extension_ms=60_000)


@dataclass
class LiveRun:
    stack: Stack
    bid_ids: list[str]


# One live run for the module: its tests share the module's event loop.
pytestmark = pytest.mark.asyncio(loop_scope="module")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def live_run(
    kafka_module: KafkaCluster, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[LiveRun]:
    stack = Stack(kafka_module, redis_server, tmp_path_factory.mktemp("replay"), f"test:{uuid.uuid4().hex[:8]}:")
    worker = stack.start_worker()
    try:
        async with kafka_io(kafka_module.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
            # Times leave room for a slow machine: the bids are placed (and sent) seconds before the
            # end they extend, and every expected value below follows from the log alone.
            t = now_ms()
            started = record(ev.AuctionStarted("r-dup", t, t + 5_000, POLICY, "m"), event_id="r-dup-start")
            await produce(
                producer,
                record(ev.AuctionStarted("r-ext", t, t + 8_000, EXTENDING, "m"), event_id="r-ext-start"),
                record(ev.AuctionStarted("r-cancel", t, t + 60_000, POLICY, "m")),
                record(ev.AuctionStarted("r-plain", t, t + 4_000, POLICY, "m")),
                started,
                started,  # the producer sent it twice
                record(ev.AuctionStarted("r-dup", t, t + 5_000, POLICY, "m")),  # same times, new id
                record(ev.BidPlaced("ghost", "g1", "u", "1", t)),  # unknown auction
            )
            await producer.send_and_wait(topics.BID_PLACED, b"garbage", key=b"r-ext")
            await producer.send_and_wait(
                topics.AUCTION_STARTED, raw_event(ev.AUCTION_STARTED, {"auction_id": "r-bad"}), key=b"r-bad"
            )
            bid_ids = ["bid-1", "bid-2"]
            await produce(producer, record(ev.BidPlaced("r-ext", bid_ids[0], "u", "5", t + 100), event_id=bid_ids[0]))
            await produce(producer, record(ev.BidPlaced("r-ext", bid_ids[1], "u", "6", t + 200), event_id=bid_ids[1]))
            await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "extended", 60, count=2)

            worker.stop()  # a restart in the middle of the run
            stack.start_worker()
            await produce(producer, record(ev.AuctionCancelled("r-cancel", "withdrawn", "admin")))
            await watch.wait_for(
                topics.TIMER_EVENTS, lambda d: d["data"]["kind"] in ("completed", "cancelled"), 90, count=4
            )
            await produce(producer, record(ev.BidPlaced("r-plain", "late", "u", "7", now_ms())))  # after its end

            client = aioredis.Redis(port=redis_server.port, decode_responses=True)

            async def settled() -> bool:
                table = await read_table(kafka_module.bootstrap, APP_ID)
                return len(table) == 4 and not await mismatches(client, Keys(stack.key_prefix), table)

            await eventually(settled, 30, "the table and the projection to settle")
            await client.aclose()
        # The run is over: stop the worker, so its reconciler cannot repair what a test alters.
        stack.stop_all()
        yield LiveRun(stack, bid_ids)
    finally:
        stack.stop_all()


def replay_cli(run: LiveRun, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "replay", *args],
        env=run.stack.env(**env), capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


async def test_replay_equals_the_live_table_and_verify_passes(live_run: LiveRun) -> None:
    bootstrap = live_run.stack.kafka.bootstrap
    records, partitions = await read_inputs(bootstrap, Window(), None, Progress())
    replayed = reprocess(records, partitions, 65_536)
    assert replayed.states == await read_table(bootstrap, APP_ID)
    assert replayed.rejected == {"not_json": 1, "missing_field": 1, "unknown_auction": 1}
    result = await asyncio.to_thread(replay_cli, live_run, "--verify")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "verify: 0 difference(s)" in result.stderr


async def test_a_timeline_lists_registration_extensions_and_completion_with_causes(live_run: LiveRun) -> None:
    result = await asyncio.to_thread(replay_cli, live_run, "--auction", "r-ext", "--timeline", "-")
    assert result.returncode == 0, result.stderr
    lines = [orjson.loads(line) for line in result.stdout.splitlines()]
    assert [line["kind"] for line in lines] == ["registered", "extended", "extended", "completed"]
    assert [line["version"] for line in lines] == [1, 2, 3, 4]
    assert [line["cause"]["id"] for line in lines[:3]] == ["r-ext-start", *live_run.bid_ids]
    assert lines[3]["cause"]["type"] == "com.marketplace.timer.expire"
    assert lines[2]["ends_at_ms"] == lines[3]["ends_at_ms"]
    assert all(len(line["trace_id"]) == 32 for line in lines)


async def test_rebuild_into_an_empty_redis_equals_the_live_projection(
    live_run: LiveRun, redis_server: RedisServer
) -> None:
    fresh = f"test:{uuid.uuid4().hex[:8]}:"
    result = await asyncio.to_thread(replay_cli, live_run, "--rebuild-redis", redis_server.url, "--prefix", fresh)
    assert result.returncode == 0, result.stderr
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    live, rebuilt = Keys(live_run.stack.key_prefix), Keys(fresh)
    for auction_id in ("r-ext", "r-cancel", "r-plain", "r-dup"):
        a = await client.hgetall(live.timer(auction_id))
        b = await client.hgetall(rebuilt.timer(auction_id))
        assert a and {k: a[k] for k in FIELDS} == {k: b[k] for k in FIELDS}
    assert await client.zrange(live.active, 0, -1, withscores=True) == await client.zrange(
        rebuilt.active, 0, -1, withscores=True
    )
    await client.aclose()


async def test_verify_names_an_altered_redis_hash(live_run: LiveRun, redis_server: RedisServer) -> None:
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    key = Keys(live_run.stack.key_prefix).timer("r-plain")
    original = await client.hget(key, "ends_at_ms")
    await client.hset(key, "ends_at_ms", "1")
    try:
        result = await asyncio.to_thread(replay_cli, live_run, "--verify")
    finally:
        assert original is not None
        await client.hset(key, "ends_at_ms", original)
        await client.aclose()
    assert result.returncode == 1
    assert "r-plain" in result.stdout and "ends_at_ms" in result.stdout


async def test_clear_errors_for_bad_ranges_and_unreachable_brokers(live_run: LiveRun) -> None:
    future = await asyncio.to_thread(replay_cli, live_run, "--from", "2099-01-01T00:00:00Z")
    assert future.returncode == 2 and "no input events" in future.stderr
    bad_time = await asyncio.to_thread(replay_cli, live_run, "--from", "yesterday")
    assert bad_time.returncode == 2 and "ISO time" in bad_time.stderr
    nowhere = await asyncio.to_thread(replay_cli, live_run, AUCTION_TIMER_KAFKA_BOOTSTRAP="127.0.0.1:1")
    assert nowhere.returncode == 2 and "cannot reach Kafka" in nowhere.stderr
