"""GET /auctions: the running auctions from the Redis active set, ending soonest first, a page
at a time; in-process gateway against real Redis (and Kafka for its feed)."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis
from aiohttp.test_utils import TestClient

from app.gateway.server import build_gateway_app
from app.settings import Settings
from infra.kafka_server import KafkaCluster
from infra.redis_server import RedisServer
from projections.keys import Keys
from projections.store import Projected, ProjectionStore
from streams import events as ev
from streams.fold import apply
from streams.state import TimerState
from streams.topic_admin import ensure_topics
from tests.support.contracts import check_openapi
from tests.support.events import envelope, now_ms, started
from tests.support.gateway import gateway_settings

LIVE = 10_000
POLICY = ev.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=10_000)


@pytest.fixture
async def settings(kafka_module: KafkaCluster, redis_server: RedisServer, key_prefix: str) -> Settings:
    s = gateway_settings(kafka_module.bootstrap, redis_server.url, key_prefix)
    await ensure_topics(s.topic_plan())
    return s


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(build_gateway_app(settings))


@pytest.fixture
async def store(settings: Settings) -> Any:
    client = aioredis.Redis.from_url(settings.redis_url, decode_responses=True)
    yield ProjectionStore(client, Keys(settings.key_prefix), 3600)
    await client.aclose()


def registered(auction_id: str, starts: int, ends: int) -> TimerState:
    state, _ = apply(None, envelope(started(auction_id, starts, ends, POLICY), time_ms=now_ms()))
    assert state is not None
    return state


async def write(store: ProjectionStore, states: list[TimerState]) -> None:
    for at in range(0, len(states), 1_000):
        await store.write([Projected.of(s.public()) for s in states[at : at + 1_000]], "newer", now_ms())


async def page_through(client: TestClient, limit: int, **params: str) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        query = {"status": "running", "limit": str(limit), **params, **({"cursor": cursor} if cursor else {})}
        response = await client.get("/auctions", params=query)
        assert response.status == 200, await response.text()
        assert response.headers["Cache-Control"] == "no-store"
        body = await response.json()
        check_openapi("AuctionList", body)
        assert len(body["auctions"]) <= limit
        seen += body["auctions"]
        cursor = body["next_cursor"]
        if cursor is None:
            return seen


async def test_pages_through_ten_thousand_live_auctions_exactly_once_soonest_first(
    client: TestClient, store: ProjectionStore
) -> None:
    now = now_ms()
    # Three auctions end in each millisecond slot, so pages split ties; ids are not in end order.
    live = [registered(f"lot-{(i * 7919) % LIVE:05d}", now - 1_000, now + 600_000 + (i // 3) * 10) for i in range(LIVE)]
    scheduled = [registered(f"later-{i}", now + 60_000, now + 600_000 + i) for i in range(5)]
    assert {s.status for s in live} == {"running"} and {s.status for s in scheduled} == {"scheduled"}
    await write(store, live + scheduled)
    expected = sorted((s.ends_at_ms, s.auction_id) for s in live)

    for limit in (500, 337):
        listed = await page_through(client, limit)
        assert [(a["ends_at_ms"], a["auction_id"]) for a in listed] == expected  # once each, soonest first
    sample = listed[0]
    assert sample["status"] == "running" and 0 < sample["remaining_ms"] <= sample["ends_at_ms"] - now

    before = expected[1_000][0]
    soon = await page_through(client, 500, ending_before_ms=str(before))
    assert [(a["ends_at_ms"], a["auction_id"]) for a in soon] == [e for e in expected if e[0] < before]


async def test_a_page_continues_right_when_the_cursors_auction_ends_meanwhile(
    client: TestClient, store: ProjectionStore
) -> None:
    now = now_ms()
    states = [registered(f"tie-{i:03d}", now - 1_000, now + 600_000 + (i // 4) * 10) for i in range(40)]
    await write(store, states)
    first = await (await client.get("/auctions", params={"limit": "10"})).json()
    cursor_id = first["auctions"][-1]["auction_id"]
    assert first["next_cursor"].endswith(f".{cursor_id}")
    # The cursor's auction is cancelled between the two pages: it leaves the active set.
    [gone] = [s for s in states if s.auction_id == cursor_id]
    cancelled, _ = apply(gone, envelope(ev.AuctionCancelled(cursor_id, "test", "admin"), time_ms=now_ms()))
    assert cancelled is not None and cancelled.status == "cancelled"
    await write(store, [cancelled])
    rest: list[dict[str, Any]] = []
    cursor = first["next_cursor"]
    while cursor:
        body = await (await client.get("/auctions", params={"limit": "10", "cursor": cursor})).json()
        rest += body["auctions"]
        cursor = body["next_cursor"]
    ids = [a["auction_id"] for a in first["auctions"]] + [a["auction_id"] for a in rest]
    assert ids == [s.auction_id for s in states]  # tie-009 ended after it was listed; nothing missed or repeated


@pytest.mark.parametrize(
    "query",
    ["status=ended", "limit=0", "limit=501", "limit=ten", "limit=-5", "ending_before_ms=-1", "ending_before_ms=1e9",
     "ending_before_ms=99999999999999999", "cursor=nonsense", "cursor=12.bad%20id", "cursor=.a"],
)  # fmt: skip
async def test_bad_queries_are_400(client: TestClient, query: str) -> None:
    response = await client.get(f"/auctions?{query}")
    assert response.status == 400
    body = await response.json()
    check_openapi("Error", body)
    assert body["error"] == "bad_request"
