"""Auction ids that look like service keys, and an auction Redis refuses for good (issue 13,
defect 1), against a real worker, gateway, Kafka and Redis: the others always get through."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from typing import Any

import aiohttp
import redis.asyncio as aioredis
from prometheus_client.parser import text_string_to_metric_families

from infra.ports import free_port
from projections.keys import Keys
from streams import events as ev
from streams import topics
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce
from tests.support.projection import table_and_mismatches
from tests.support.stack import APP_ID, ROOT, Stack
from tests.support.waiting import eventually

POLICY = ev.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=10_000)


def started(auction_id: str) -> ev.AuctionStarted:
    return ev.AuctionStarted(auction_id, now_ms(), now_ms() + 600_000, POLICY, "m")


def counter(url: str, name: str, **labels: str) -> float:
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items())
    )


def replay_verify(stack: Stack) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "replay", "--verify"],
        env=stack.env(), capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


async def projection_problems(stack: Stack, client: aioredis.Redis) -> list[str]:
    table, problems = await table_and_mismatches(stack.kafka.bootstrap, APP_ID, client, Keys(stack.key_prefix))
    return problems if table else ["no table yet"]


async def whole(stack: Stack, client: aioredis.Redis) -> bool:
    table, problems = await table_and_mismatches(stack.kafka.bootstrap, APP_ID, client, Keys(stack.key_prefix))
    return bool(table) and not problems


async def test_auctions_named_like_service_keys_are_ordinary_auctions(stack: Stack) -> None:
    assert stack.redis is not None
    stack.start_worker(AUCTION_TIMER_RECONCILE_INTERVAL_S="1")
    _, base = stack.start_gateway()
    client = aioredis.Redis(port=stack.redis.port, decode_responses=True)
    keys = Keys(stack.key_prefix)
    names = ["reconciliations", "active", "timers", "service", "auction"]
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        await produce(producer, *(record(started(a)) for a in names))
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "registered", 60, count=len(names))
        await produce(producer, record(started("after-them")))  # a stalled projection never writes it
        await eventually(lambda: whole(stack, client), 60, "every auction projected")

    # Reconciliation passes go through: a corrupted copy is repaired and streamed.
    await client.hset(keys.timer("reconciliations"), "ends_at_ms", "1")
    await eventually(lambda: whole(stack, client), 30, "the corrupted copy repaired")
    entries: list[Any] = await client.xrange(keys.reconciliations)  # type: ignore[assignment]
    assert [e[1]["auction_id"] for e in entries] == ["reconciliations"]

    async with aiohttp.ClientSession() as session:
        for auction_id in ("reconciliations", "after-them"):
            response = await session.get(f"{base}/auctions/{auction_id}/timer")
            assert response.status == 200
            assert (await response.json())["source"] == "redis"
    verified = await asyncio.to_thread(replay_verify, stack)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    await client.aclose()


async def test_an_auction_redis_refuses_is_reported_and_never_stops_the_others(stack: Stack) -> None:
    assert stack.redis is not None
    metrics_port = free_port()
    worker = stack.start_worker(
        AUCTION_TIMER_RECONCILE_INTERVAL_S="1", AUCTION_TIMER_WORKER_METRICS_PORT=str(metrics_port)
    )
    worker_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
    _, base = stack.start_gateway()
    client = aioredis.Redis(port=stack.redis.port, decode_responses=True)
    keys = Keys(stack.key_prefix)
    # Something else (an operator, another program) holds a string where this auction's hash goes.
    await client.set(keys.timer("victim"), "not a hash")
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        await produce(producer, *(record(started(a)) for a in ("first", "victim", "second")))
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "registered", 60, count=3)
        await produce(producer, record(started("later")))

        async def only_the_victim_differs() -> bool:
            problems = await projection_problems(stack, client)
            return bool(problems) and all(" victim:" in p for p in problems)

        await eventually(only_the_victim_differs, 60, "every other auction projected")

    def refused(component: str) -> float:
        return counter(worker_metrics, "auctions_projection_refused_total", component=component, error="WRONGTYPE")

    assert await asyncio.to_thread(refused, "projection") == 1
    # The reconciler reports it whenever a pass compares it (that keeps the alert firing) and repairs the rest.
    await eventually(lambda: asyncio.to_thread(lambda: refused("reconciler") >= 2), 30, "two passes reporting it")
    assert "Redis refuses this auction's projection for good" in worker.log_path.read_text()
    # ... and the auctions checked in the same batch as the victim are still repaired.
    await client.hset(keys.timer("first"), "ends_at_ms", "1")
    await eventually(only_the_victim_differs, 30, "the other auction's corrupted copy repaired")

    async with aiohttp.ClientSession() as session:
        # The gateway saw its ticks: it answers from memory, marked stale, and its breaker stays
        # closed for every other auction.
        response = await session.get(f"{base}/auctions/victim/timer")
        assert response.status == 200
        body = await response.json()
        assert (body["source"], body["stale"]) == ("memory", True)
        other = await (await session.get(f"{base}/auctions/first/timer")).json()
        assert other["source"] == "redis"
        assert (await (await session.get(f"{base}/readyz")).json())["redis"] is True

    verified = await asyncio.to_thread(replay_verify, stack)
    assert verified.returncode == 1, verified.stderr
    [line] = verified.stdout.splitlines()
    assert line.startswith("redis   victim: unreadable (WRONGTYPE"), line

    # Once someone removes the foreign key, the reconciler projects the auction.
    await client.delete(keys.timer("victim"))
    await eventually(lambda: whole(stack, client), 30, "the victim projected once its key is free")
    await client.aclose()
