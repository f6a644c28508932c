"""An unexpected error in the gateway's feed, in-process against real Kafka and Redis: logged at
once, readiness says so, and the other auctions' fan-out goes on."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app.gateway import feed
from app.gateway.context import GATEWAY
from app.gateway.server import build_gateway_app
from infra.kafka_server import KafkaCluster
from infra.redis_server import RedisServer
from streams import outputs
from streams.topic_admin import ensure_topics
from tests.support.events import now_ms
from tests.support.gateway import Recorder, gateway_settings, timer
from tests.support.kafka import kafka_io, produce
from tests.support.waiting import eventually


async def test_an_error_on_one_record_is_logged_at_once_and_readiness_says_so_until_a_record_goes_through(
    aiohttp_client: Any, kafka_module: KafkaCluster, redis_server: RedisServer, key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:  # fmt: skip
    settings = gateway_settings(kafka_module.bootstrap, redis_server.url, key_prefix)
    await ensure_topics(settings.topic_plan())
    client: TestClient = await aiohttp_client(build_gateway_app(settings))
    gw = client.app[GATEWAY]
    await eventually(lambda: asyncio.sleep(0, result=gw.feed.live), 30, "the feed live")
    fine, broken = timer(f"fine-{uuid.uuid4().hex[:6]}"), timer(f"boom-{uuid.uuid4().hex[:6]}")

    # A bug that only this auction's records hit.
    publish = gw.hub.publish

    def buggy(auction_id: str, message: dict[str, Any]) -> int:
        if auction_id == broken.auction_id:
            raise RuntimeError("a bug in the fan-out")
        return publish(auction_id, message)

    gw.hub.publish = buggy

    async def ready() -> dict[str, bool]:
        return dict(await (await client.get("/readyz")).json())

    watcher = Recorder(await client.ws_connect(f"/auctions/{fine.auction_id}/updates")).start()
    await eventually(lambda: asyncio.sleep(0, result=watcher.of_type("snapshot")), 10, "the snapshot")
    caplog.set_level(logging.ERROR, logger="auction_timer.gateway.feed")
    async with kafka_io(kafka_module.bootstrap) as (producer, _):
        await produce(producer, outputs.tick(broken, 1, now_ms()))

        def logged() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == "auction_timer.gateway.feed" and r.exc_info]

        [record] = await eventually(lambda: asyncio.sleep(0, result=logged()), 30, "the error logged")
        assert record.exc_info is not None and "a bug in the fan-out" in str(record.exc_info[1])
        # Nothing else has come through since: readiness says the feed is failing.
        assert (await ready())["kafka"] is False
        await eventually(
            lambda: asyncio.sleep(0, result=[m for m in watcher.of_type("feed") if m["status"] == "interrupted"]),
            10, "sockets told the feed is interrupted",
        )  # fmt: skip

        # The next record, for another auction, goes out; the feed is live again.
        await produce(producer, outputs.tick(fine, 1, now_ms()))
        await eventually(lambda: asyncio.sleep(0, result=watcher.of_type("tick")), 30, "the other auction's tick")
        assert (await ready())["kafka"] is True
        assert [m["status"] for m in watcher.of_type("feed")] == ["interrupted", "restored"]
    await watcher.stop()


async def test_an_error_in_the_consumer_loop_is_logged_at_once_and_the_consumer_restarts(
    aiohttp_client: Any, kafka_module: KafkaCluster, redis_server: RedisServer, key_prefix: str,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    settings = gateway_settings(kafka_module.bootstrap, redis_server.url, key_prefix)
    await ensure_topics(settings.topic_plan())
    failures: list[int] = []
    original = feed.positioned

    async def positioned_once_broken(consumer: Any) -> bool:
        if not failures:
            failures.append(1)
            raise RuntimeError("a bug while positioning")
        return await original(consumer)

    monkeypatch.setattr("app.gateway.feed.positioned", positioned_once_broken)
    caplog.set_level(logging.ERROR, logger="auction_timer.gateway.feed")
    client: TestClient = await aiohttp_client(build_gateway_app(settings))
    gw = client.app[GATEWAY]

    def logged() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "auction_timer.gateway.feed" and r.exc_info]

    [record] = await eventually(lambda: asyncio.sleep(0, result=logged()), 30, "the error logged")
    assert record.exc_info is not None and "a bug while positioning" in str(record.exc_info[1])
    await eventually(lambda: asyncio.sleep(0, result=gw.feed.live), 30, "the restarted feed live")
    assert (await (await client.get("/readyz")).json())["kafka"] is True
