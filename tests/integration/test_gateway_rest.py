"""REST contract of the gateway, in-process, against real Kafka and Redis."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient

from app.gateway.context import GATEWAY
from app.gateway.security import RateLimiter
from app.gateway.server import build_gateway_app
from app.settings import Settings
from infra.kafka_server import KafkaCluster
from infra.redis_server import RedisServer
from streams import topics
from streams.topic_admin import ensure_topics
from tests.support.committed import end_offsets
from tests.support.contracts import check_openapi
from tests.support.events import now_ms
from tests.support.gateway import gateway_settings, seed, timer
from tests.support.kafka import TopicWatcher
from tests.support.waiting import eventually


@pytest.fixture
async def settings(kafka_module: KafkaCluster, redis_server: RedisServer, key_prefix: str) -> Settings:
    s = gateway_settings(kafka_module.bootstrap, redis_server.url, key_prefix, sync_rate_per_min=5)
    await ensure_topics(s.topic_plan())
    return s


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(build_gateway_app(settings))


async def test_get_timer_from_the_projection(client: TestClient, settings: Settings) -> None:
    state = timer(f"rest-{uuid.uuid4().hex[:8]}")
    await seed(settings.redis_url, settings.key_prefix, state)
    before = now_ms()
    response = await client.get(f"/auctions/{state.auction_id}/timer")
    assert response.status == 200
    assert response.headers["Cache-Control"] == "no-store"
    body = await response.json()
    check_openapi("TimerView", body)
    assert (body["version"], body["ends_at_ms"], body["source"], body["stale"]) == (1, state.ends_at_ms, "redis", False)
    assert before <= body["server_time_ms"] <= now_ms()
    assert body["remaining_ms"] == state.ends_at_ms - body["server_time_ms"]
    assert body["tick_interval_ms"] == 1000
    assert body["trace_id"] == state.trace_id


async def test_unknown_and_bad_ids(client: TestClient) -> None:
    missing = await client.get("/auctions/never-registered/timer")
    assert missing.status == 404
    check_openapi("Error", await missing.json())
    bad = await client.get("/auctions/bad%20id!/timer")
    assert bad.status == 400
    assert (await bad.json())["error"] == "bad_request"
    too_long = await client.get(f"/auctions/{'x' * 65}/timer")
    assert too_long.status == 400
    nowhere = await client.get("/nowhere")
    assert nowhere.status == 404
    assert (await nowhere.json())["error"] == "not_found"


async def test_sync_records_drift_and_notes_a_client_newer_than_the_projection(
    client: TestClient, settings: Settings, kafka_module: KafkaCluster
) -> None:
    state = timer(f"sync-{uuid.uuid4().hex[:8]}")
    await seed(settings.redis_url, settings.key_prefix, state)
    watch = TopicWatcher(kafka_module.bootstrap, (topics.AUDIT, topics.ANALYTICS))
    await watch.start()
    commands_before = await end_offsets(kafka_module.bootstrap, topics.COMMANDS)
    try:
        asked_at = now_ms()
        shown = state.ends_at_ms - asked_at + 800  # the client shows 800 ms too much
        response = await client.post(
            "/timers/sync",
            json={"auction_id": state.auction_id, "client_remaining_ms": shown, "version": 1, "client_time_ms": 5},
        )
        assert response.status == 200
        body = await response.json()
        check_openapi("SyncResponse", body)
        # Exactly: what the client showed minus the truth at the server's instant (800 ms, plus the
        # time the request took to reach it, whatever that was).
        assert body["remaining_ms"] == state.ends_at_ms - body["server_time_ms"]
        assert body["drift_ms"] == shown - body["remaining_ms"] == 800 + body["server_time_ms"] - asked_at
        assert body["reconcile_requested"] is False
        assert body["client_time_ms"] == 5

        newer = await client.post(
            "/timers/sync",
            json={"auction_id": state.auction_id, "client_remaining_ms": 1, "version": 3, "client_time_ms": 6},
        )
        assert (await newer.json())["reconcile_requested"] is True

        def mine(doc: dict[str, Any]) -> bool:
            data = doc.get("data") or doc.get("properties") or {}
            return data.get("auction_id") == state.auction_id

        audits = await watch.wait_for(topics.AUDIT, mine, 20, count=2)
        assert {a["data"]["action"] for a in audits} == {"client_resynced"}
        assert all(a["data"]["trace_id"] == state.trace_id for a in audits)
        events = await watch.wait_for(topics.ANALYTICS, mine, 20, count=2)
        assert {e["event"] for e in events} == {"auction_timer_resynced"}
        assert all(e["properties"]["trace_id"] == state.trace_id for e in events)
        # The gateway writes no command (only the worker may: README, Security): once everything it
        # had to send is acknowledged, auctions.timer.commands is as long as before the syncs.
        await client.app[GATEWAY].outbox.flushed()
        assert await end_offsets(kafka_module.bootstrap, topics.COMMANDS) == commands_before
    finally:
        await watch.stop()
    metrics = await (await client.get("/metrics")).text()
    assert "auctions_timer_drift_ms_count" in metrics


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"[1]",
        orjson.dumps({"auction_id": "a", "client_remaining_ms": -1, "version": 1, "client_time_ms": 1}),
        orjson.dumps({"auction_id": "a", "client_remaining_ms": "5", "version": 1, "client_time_ms": 1}),
        orjson.dumps({"auction_id": "bad id", "client_remaining_ms": 5, "version": 1, "client_time_ms": 1}),
        orjson.dumps({"client_remaining_ms": 5, "version": 1, "client_time_ms": 1}),
    ],
)
async def test_sync_rejects_bad_bodies(client: TestClient, body: bytes) -> None:
    response = await client.post("/timers/sync", data=body, headers={"Content-Type": "application/json"})
    assert response.status == 400
    check_openapi("Error", await response.json())


class StoppedClockLimiter(RateLimiter):
    """The sync limiter with its clock stopped: no call is refilled while the test runs, however
    slowly it runs."""

    def allow(self, address: str, now: float | None = None) -> tuple[bool, float]:
        return super().allow(address, 0.0)


async def test_sync_body_size_and_rate_limits(client: TestClient, settings: Settings) -> None:
    client.app[GATEWAY].sync_limiter = StoppedClockLimiter(settings.sync_rate_per_min)
    huge = await client.post(
        "/timers/sync", data=b"{" + b" " * 8000 + b"}", headers={"Content-Type": "application/json"}
    )
    assert huge.status == 413
    assert (await huge.json())["error"] == "too_large"
    state = timer(f"rate-{uuid.uuid4().hex[:8]}")
    await seed(settings.redis_url, settings.key_prefix, state)
    body = {"auction_id": state.auction_id, "client_remaining_ms": 1, "version": 1, "client_time_ms": 1}
    statuses = [(await client.post("/timers/sync", json=body)).status for _ in range(8)]
    # The limit is 5 a minute; the oversized call above spent one of them.
    assert statuses[:4] == [200] * 4
    assert statuses[-1] == 429
    limited = await client.post("/timers/sync", json=body)
    assert int(limited.headers["Retry-After"]) >= 1


async def test_health_readiness_and_metrics(client: TestClient) -> None:
    assert (await (await client.get("/healthz")).json()) == {"status": "ok"}
    gw = client.app[GATEWAY]

    async def ready() -> dict[str, bool]:
        return dict(await (await client.get("/readyz")).json())

    await eventually(lambda: asyncio.sleep(0, result=gw.feed.live), 60, "the feed live")
    assert await ready() == {"kafka": True, "redis": True}
    text = await (await client.get("/metrics")).text()
    assert "auctions_gateway_ws_connections" in text
    page = await client.get("/auctions/some-auction")
    assert page.status == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
