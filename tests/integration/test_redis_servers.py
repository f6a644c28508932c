"""Redis through the fixtures: a standalone server, and a Sentinel failover clients follow."""

from __future__ import annotations

import time

import pytest
from redis.sentinel import Sentinel

from infra.redis_server import MASTER_NAME, RedisSentinelGroup, RedisServer
from tests.support.waiting import eventually_sync


def test_standalone_read_write(redis_server: RedisServer, key_prefix: str) -> None:
    client = redis_server.client()
    client.hset(f"{key_prefix}h", mapping={"version": 3, "ends_at_ms": 1_700_000_000_123})
    assert client.hgetall(f"{key_prefix}h") == {"version": "3", "ends_at_ms": "1700000000123"}
    assert client.config_get("appendonly") == {"appendonly": "yes"}
    client.delete(f"{key_prefix}h")


@pytest.mark.slow
def test_sentinel_failover_promotes_replica(redis_sentinel: RedisSentinelGroup, key_prefix: str) -> None:
    sentinel = Sentinel(
        [("127.0.0.1", p) for p in redis_sentinel.sentinel_ports],
        socket_timeout=1,
        username=redis_sentinel.users[0].name,
        password=redis_sentinel.users[0].password,
        sentinel_kwargs={},
    )
    primary = sentinel.master_for(MASTER_NAME, decode_responses=True)
    primary.set(f"{key_prefix}before", "1")
    old_port = redis_sentinel.current_primary_port()
    assert old_port == redis_sentinel.primary.port

    # The replica has the write before we kill the primary, so the check after is about failover only.
    primary.wait(1, 5000)
    redis_sentinel.kill_primary()
    killed_at = time.monotonic()
    redis_sentinel.wait_failover(old_port)  # raises if Sentinel never promotes
    print(f"Sentinel promoted the replica {time.monotonic() - killed_at:.1f} s after the kill")

    assert redis_sentinel.current_primary_port() == redis_sentinel.replica.port
    # A client that asks Sentinel finds the new primary and can write to it.
    eventually_sync(lambda: primary.set(f"{key_prefix}after", "2"), 60, "writes to resume on the promoted replica")
    assert primary.get(f"{key_prefix}before") == "1"
    assert primary.get(f"{key_prefix}after") == "2"
    assert sentinel.discover_master(MASTER_NAME)[1] == redis_sentinel.replica.port
