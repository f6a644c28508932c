"""WebSockets that close leave nothing for the garbage collector: everything the gateway held for
them is freed by reference counting, so no full collection has to walk every open socket to find
them (issue #14; app/gateway/collector.py relies on it). In-process, against real Kafka and
Redis; the clients are bare sockets in threads, so every cycle found is the gateway's."""

from __future__ import annotations

import asyncio
import gc
import struct
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from app.gateway.closing import GatewayWebSocket
from app.gateway.context import GATEWAY
from app.gateway.hub import Connection, Subscriber
from app.gateway.server import build_gateway_app
from app.settings import Settings
from infra.kafka_server import KafkaCluster
from infra.redis_server import RedisServer
from streams.topic_admin import ensure_topics
from tests.support.gateway import gateway_settings
from tests.support.raw_ws import CLOSE, TEXT, RawSocket, server_frames, upgrade
from tests.support.waiting import eventually

SOCKETS = 20


def of_the_gateway(thing: object, port: int) -> bool:
    """One of the gateway's objects for a WebSocket (not, say, a Kafka client's transport)."""
    if isinstance(thing, asyncio.Transport):
        return bool(thing.get_extra_info("sockname", ("", 0))[1] == port)
    return isinstance(thing, (GatewayWebSocket, RequestHandler, BaseRequest, Connection, Subscriber))


@pytest.fixture
async def client(aiohttp_client: Any, kafka_module: KafkaCluster, redis_server: RedisServer, key_prefix: str) -> Any:
    settings: Settings = gateway_settings(kafka_module.bootstrap, redis_server.url, key_prefix)
    await ensure_topics(settings.topic_plan())
    return await aiohttp_client(build_gateway_app(settings))


def snapshots(raw: RawSocket, count: int) -> None:
    raw.read_until(lambda frames: sum(op == TEXT and b'"snapshot"' in p for op, p in frames) >= count)


def open_sockets(port: int) -> list[RawSocket]:
    """Half follow one auction each, half two auctions over /updates; each has its snapshots."""
    raws = []
    for i in range(SOCKETS):
        if i % 2:
            raw = upgrade(port, f"/auctions/gc-{i}/updates")
            snapshots(raw, 1)
        else:
            raw = upgrade(port, "/updates")
            raw.send_frame(TEXT, orjson.dumps({"type": "subscribe", "auctions": [f"gc-{i}", "gc-shared"]}))
            snapshots(raw, 2)
        raws.append(raw)
    return raws


def close_sockets(raws: list[RawSocket]) -> None:
    """Half say goodbye first (a close frame, and the gateway's answer); the others just go."""
    for i, raw in enumerate(raws):
        if i % 4 < 2:
            raw.send_frame(CLOSE, struct.pack("!H", 1000))
            raw.read_until(lambda frames: any(op == CLOSE for op, _ in frames))
        raw.close()


async def test_closed_sockets_leave_no_reference_cycles(client: TestClient) -> None:
    gw = client.app[GATEWAY]
    assert client.port is not None
    raws = await asyncio.to_thread(open_sockets, client.port)
    assert len(gw.hub.connections) == SOCKETS
    assert all(any(op == TEXT for op, _ in server_frames(raw.received)) for raw in raws)

    gc.collect()
    gc.unfreeze()  # the collector freezes what lives a while; frozen objects are never examined
    gc.set_debug(gc.DEBUG_SAVEALL)  # from here, whatever any collection finds is kept, not freed
    try:
        await asyncio.to_thread(close_sockets, raws)

        async def all_gone() -> bool:
            return not gw.hub.connections and not gw.connections.open

        await eventually(all_gone, 30, "every socket let go")
        gc.unfreeze()
        gc.collect()
        cyclic = [type(o).__name__ for o in gc.garbage if of_the_gateway(o, client.port)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
    assert cyclic == []
