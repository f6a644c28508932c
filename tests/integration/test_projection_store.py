"""The projection's compare-and-set against a real Redis."""

from __future__ import annotations

import asyncio
import random
import uuid

import redis.asyncio as aioredis
from hypothesis import given, settings
from hypothesis import strategies as st

from infra.redis_server import RedisServer
from projections.keys import Keys
from projections.store import Projected, ProjectionStore

T0 = 1_800_000_000_000


def item(auction_id: str, version: int, status: str = "running") -> Projected:
    return Projected.of(
        {
            "auction_id": auction_id, "version": version, "status": status, "starts_at_ms": T0,
            "original_ends_at_ms": T0 + 60_000, "ends_at_ms": T0 + 60_000 + 1_000 * version,
            "soft_close_window_ms": 1, "extension_ms": 1_000, "max_extension_ms": 99_000,
            "extension_count": version - 1, "extension_total_ms": 1_000 * version, "ended_at_ms": None,
            "trace_id": "0" * 31 + "1",
        }
    )  # fmt: skip


def store_for(server: RedisServer, prefix: str) -> ProjectionStore:
    client = aioredis.Redis(port=server.port, decode_responses=True)
    return ProjectionStore(client, Keys(prefix), ended_ttl_s=60)


@settings(max_examples=60, deadline=None)
@given(
    versions=st.lists(st.integers(1, 30), min_size=1, max_size=40),
    batch_size=st.integers(1, 7),
    end_with=st.sampled_from(["running", "ended"]),
)
def test_reordered_and_duplicated_writes_keep_the_highest_version(
    redis_server: RedisServer, versions: list[int], batch_size: int, end_with: str
) -> None:
    async def scenario() -> None:
        prefix = f"test:{uuid.uuid4().hex[:10]}:"
        store = store_for(redis_server, prefix)
        top = max(versions)
        writes = [item("h1", v, end_with if v == top else "running") for v in versions]
        writes += random.sample(writes, k=min(5, len(writes)))  # duplicates
        for start in range(0, len(writes), batch_size):
            await store.write(writes[start : start + batch_size], "newer", T0)
            stored = await store.read("h1")
            assert stored is not None and stored["version"] == max(w.version for w in writes[: start + batch_size])
        final = await store.read("h1")
        score = await store.client.zscore(store.keys.active, "h1")
        assert final is not None and final["version"] == top
        assert final["ends_at_ms"] == T0 + 60_000 + 1_000 * top
        # Hash and sorted set agree: live means in the set at ends_at, ended means out of it.
        if final["status"] == "running":
            assert score == final["ends_at_ms"]
            assert await store.client.ttl(store.keys.timer("h1")) == -1
        else:
            assert score is None
            assert 0 < await store.client.ttl(store.keys.timer("h1")) <= 60
        await store.client.delete(store.keys.timer("h1"), store.keys.active)
        await store.client.aclose()

    asyncio.run(scenario())


async def test_repair_mode_rewrites_equal_version_but_never_older(redis_server: RedisServer, key_prefix: str) -> None:
    store = store_for(redis_server, key_prefix)
    await store.write([item("r1", 5)], "newer", T0)
    await store.client.hset(store.keys.timer("r1"), "ends_at_ms", "1")  # corrupted copy, same version
    assert await store.write([item("r1", 5)], "newer", T0) == [False]
    assert await store.write([item("r1", 5)], "repair", T0) == [True]
    assert await store.write([item("r1", 4)], "repair", T0) == [False]
    stored = await store.read("r1")
    assert stored is not None and (stored["version"], stored["ends_at_ms"]) == (5, T0 + 65_000)
    await store.client.aclose()


async def test_noscript_after_script_flush_is_handled(redis_server: RedisServer, key_prefix: str) -> None:
    store = store_for(redis_server, key_prefix)
    await store.write([item("s1", 1)], "newer", T0)
    await store.client.script_flush()  # what a restart or a failover to a fresh primary leaves
    assert await store.write([item("s1", 2)], "newer", T0) == [True]
    stored = await store.read("s1")
    assert stored is not None and stored["version"] == 2
    await store.client.aclose()
