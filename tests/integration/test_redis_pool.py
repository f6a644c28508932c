"""The service's Redis client under a burst: more commands at once than its pool holds wait for a
connection instead of failing (issue #14: 10,000 sockets connecting at once each read a snapshot,
and the reads past the hundredth failed with MaxConnectionsError), standalone and via Sentinel."""

from __future__ import annotations

import asyncio

import redis.asyncio as redis

from app.redis_client import POOL_SIZE, connect
from app.settings import Settings
from infra.redis_server import MASTER_NAME, RedisSentinelGroup, RedisServer
from tests.conftest import SENTINEL_SERVICE


async def burst(client: redis.Redis, key: str) -> None:
    await client.set(key, "there")
    # Every command takes a connection before any gives one back (connecting awaits the socket).
    answers = await asyncio.gather(*(client.get(key) for _ in range(3 * POOL_SIZE)))
    assert answers == ["there"] * (3 * POOL_SIZE)
    pool = client.connection_pool
    assert len(pool._available_connections) + len(pool._in_use_connections) == POOL_SIZE
    await client.delete(key)


async def test_a_burst_past_the_pool_waits_for_connections(redis_server: RedisServer, key_prefix: str) -> None:
    client = connect(Settings.from_env({"AUCTION_TIMER_REDIS_URL": redis_server.url}))
    try:
        await burst(client, f"{key_prefix}burst")
    finally:
        await client.aclose()


async def test_a_burst_past_the_pool_waits_through_sentinel(
    redis_sentinel: RedisSentinelGroup, key_prefix: str
) -> None:
    settings = Settings.from_env({
        "AUCTION_TIMER_REDIS_SENTINELS": redis_sentinel.sentinel_addresses,
        "AUCTION_TIMER_REDIS_SENTINEL_MASTER": MASTER_NAME,
        "AUCTION_TIMER_REDIS_USERNAME": SENTINEL_SERVICE.name,
        "AUCTION_TIMER_REDIS_PASSWORD": SENTINEL_SERVICE.password,
    })  # fmt: skip
    client = connect(settings)
    try:
        await burst(client, f"{key_prefix}burst")
    finally:
        await client.aclose()
