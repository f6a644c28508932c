"""The gateway's hardened edges and degraded modes, against real processes."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import struct
import urllib.parse
from pathlib import Path

import aiohttp
import pytest

from streams import events as ev
from streams import outputs, topics
from streams.fold import apply
from tests.support.events import envelope, now_ms, record, started
from tests.support.gateway import Recorder, seed
from tests.support.kafka import kafka_io, produce
from tests.support.stack import Stack
from tests.support.waiting import eventually

FLOOD_PACE_S = 0.005  # the flood's pace: ten ticks every 5 ms, about 2,000 a second
POLICY = ev.Policy(soft_close_window_ms=2_000, extension_ms=3_000, max_extension_ms=60_000)


def ws_url(base: str, auction_id: str) -> str:
    return base.replace("http", "ws") + f"/auctions/{auction_id}/updates"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def close_code_in(stream: bytes) -> int | None:
    """Walk server (unmasked) WebSocket frames after the HTTP response; the close frame's code."""
    at = stream.index(b"\r\n\r\n") + 4
    while at + 2 <= len(stream):
        opcode, length = stream[at] & 0x0F, stream[at + 1] & 0x7F
        at += 2
        if length == 126:
            length = struct.unpack(">H", stream[at : at + 2])[0]
            at += 2
        elif length == 127:
            length = struct.unpack(">Q", stream[at : at + 8])[0]
            at += 8
        if opcode == 0x8:
            return int(struct.unpack(">H", stream[at : at + 2])[0])
        at += length
    return None


async def test_a_client_that_never_reads_is_closed_while_others_keep_receiving(stack: Stack) -> None:
    # A close grace longer than the test, so the stuck client can read its close frame at the end
    # (tests/e2e/test_gateway_hostile.py covers the reset after a short grace).
    gateway, base = stack.start_gateway(AUCTION_TIMER_WS_SEND_QUEUE="16", AUCTION_TIMER_WS_CLOSE_GRACE_S="60")
    port = urllib.parse.urlparse(base).port
    assert port is not None
    state, _ = apply(None, envelope(started("slow-1", now_ms(), now_ms() + 600_000), time_ms=now_ms()))
    assert state is not None
    async with aiohttp.ClientSession() as session, kafka_io(stack.kafka.bootstrap) as (producer, _):
        healthy = Recorder(await session.ws_connect(ws_url(base, "slow-1"))).start()
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        stuck.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        stuck.sendall(
            f"GET /auctions/slow-1/updates HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        rss_before = rss_mb(gateway.pid)
        # A flood on the feed: 4,000 ticks of ~2 KB for this auction, far more than the stuck
        # socket's buffers and its 16-message queue hold.
        base_tick = outputs.tick(state, 1, now_ms())
        padded = base_tick.value.replace(b'"seq":1', b'"pad":"' + b"x" * 2000 + b'","seq":1')
        for i in range(4_000):
            await producer.send(topics.TICKS, padded.replace(b'"seq":1', f'"seq":{i + 1}'.encode()), key=b"slow-1")
            if i % 10 == 9:
                await producer.flush()
                await asyncio.sleep(FLOOD_PACE_S)
        await eventually(lambda: asyncio.sleep(0, result=len(healthy.of_type("tick")) >= 4_000), 60, "all ticks")
        rss_after = rss_mb(gateway.pid)

        metrics = await (await session.get(f"{base}/metrics")).text()
        closes = [
            line for line in metrics.splitlines() if line.startswith("auctions_gateway_slow_consumer_closes_total")
        ]
        assert closes and float(closes[0].split()[-1]) == 1.0
        stuck.settimeout(10)
        received = b""
        while chunk := await asyncio.to_thread(stuck.recv, 1 << 20):
            received += chunk
        stuck.close()
        assert close_code_in(received) == 4008
        assert not healthy.ws.closed
        await healthy.stop()
    print(f"gateway RSS {rss_before:.0f} MB -> {rss_after:.0f} MB through a 8 MB flood with one stuck socket")
    assert rss_after - rss_before < 64


async def test_origin_oversize_frames_and_bad_json(stack: Stack) -> None:
    _, base = stack.start_gateway()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await session.ws_connect(ws_url(base, "edge-1"), origin="http://evil.test")
        assert refused.value.status == 403
        allowed = await session.ws_connect(ws_url(base, "edge-1"), origin="http://allowed.test")
        await allowed.close()

        ws = await session.ws_connect(ws_url(base, "edge-1"))
        assert (await ws.receive_json())["type"] == "snapshot"
        await ws.send_str("{not json")
        assert (await ws.receive_json())["code"] == "bad_json"
        await ws.send_json({"type": "ping", "client_time_ms": 12.5})
        pong = await ws.receive_json()
        assert pong["type"] == "pong" and pong["client_time_ms"] == 12.5
        assert abs(pong["server_time_ms"] - now_ms()) < 1_000
        await ws.send_str("x" * 5_000)
        closing = await ws.receive()
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009
        bad_id = await session.get(f"{base}/auctions/not%20ok/updates")
        assert bad_id.status == 400


async def test_redis_down_serves_stale_state_not_500(private_stack: Stack) -> None:
    stack = private_stack
    stack.start_worker()
    _, base = stack.start_gateway()
    assert stack.redis is not None
    async with aiohttp.ClientSession() as session, kafka_io(stack.kafka.bootstrap) as (producer, _):
        # Open a socket first, so this gateway's feed has seen the auction's ticks.
        watcher = Recorder(await session.ws_connect(ws_url(base, "stale-1"))).start()
        await produce(producer, record(ev.AuctionStarted("stale-1", now_ms(), now_ms() + 600_000, POLICY, "m")))

        async def from_redis() -> dict:
            response = await session.get(f"{base}/auctions/stale-1/timer")
            body = await response.json()
            return body if response.status == 200 and body["source"] == "redis" and watcher.of_type("tick") else {}

        fresh = await eventually(from_redis, 60, "the timer from Redis")
        stack.redis.stop()

        # Readiness asks Redis itself (a PING, cached for a second), before any request could
        # have tripped the read path's circuit breaker.
        async def readiness() -> dict[str, bool]:
            return dict(await (await session.get(f"{base}/readyz")).json())

        async def redis_down() -> bool:
            return await readiness() == {"kafka": True, "redis": False}

        await eventually(redis_down, 10, "readyz to see Redis down")
        response = await session.get(f"{base}/auctions/stale-1/timer")
        assert response.status == 200
        stale = await response.json()
        assert (stale["source"], stale["stale"], stale["version"]) == ("memory", True, fresh["version"])
        assert stale["ends_at_ms"] == fresh["ends_at_ms"]
        assert (await session.get(f"{base}/auctions/never-seen/timer")).status == 503
        stack.redis.start()

        async def redis_back() -> bool:
            return await readiness() == {"kafka": True, "redis": True}

        await eventually(redis_back, 10, "readyz to see Redis back")
        await watcher.stop()


async def test_gateway_restart_clients_reconnect_and_rehydrate(stack: Stack) -> None:
    stack.start_worker()
    gateway, base = stack.start_gateway()
    port = urllib.parse.urlparse(base).port
    async with aiohttp.ClientSession() as session, kafka_io(stack.kafka.bootstrap) as (producer, _):
        socket_1 = Recorder(await session.ws_connect(ws_url(base, "restart-1"))).start()
        start = now_ms()
        await produce(producer, record(ev.AuctionStarted("restart-1", start, start + 600_000, POLICY, "m")))
        await produce(producer, record(ev.BidPlaced("restart-1", "b1", "u", "1", start + 1)))
        await eventually(lambda: asyncio.sleep(0, result=socket_1.of_type("tick")), 60, "a tick")
        last_version = max(m["version"] for m in socket_1.messages if "version" in m)
        gateway.stop()
        await eventually(lambda: asyncio.sleep(0, result=socket_1.closed_code is not None), 10, "the close")
        assert socket_1.closed_code == 1001  # going away: reconnect
        stack.start_gateway(port=port)
        socket_2 = Recorder(await session.ws_connect(ws_url(base, "restart-1"))).start()
        [snap] = await eventually(lambda: asyncio.sleep(0, result=socket_2.of_type("snapshot")), 10, "a snapshot")
        assert snap["state"]["version"] >= last_version
        assert snap["state"]["ends_at_ms"] == socket_1.messages[-1]["ends_at_ms"]
        await socket_2.stop()


async def test_kafka_down_sockets_stay_open_and_rest_answers_from_redis(stack: Stack) -> None:
    _, base = stack.start_gateway()
    assert stack.redis is not None
    state, _ = apply(None, envelope(started("kdown-1", now_ms(), now_ms() + 600_000), time_ms=now_ms()))
    assert state is not None
    await seed(stack.redis.url, stack.key_prefix, state)
    async with aiohttp.ClientSession() as session:
        socket_1 = Recorder(await session.ws_connect(ws_url(base, "kdown-1"))).start()
        [snap] = await eventually(lambda: asyncio.sleep(0, result=socket_1.of_type("snapshot")), 10, "a snapshot")
        assert snap["state"]["version"] == 1
        stack.kafka.stop()

        def feed_says(status: str):
            return lambda: asyncio.sleep(0, result=[m for m in socket_1.of_type("feed") if m["status"] == status])

        await eventually(feed_says("interrupted"), 20, "the feed-interrupted notice")
        assert not socket_1.ws.closed
        response = await session.get(f"{base}/auctions/kdown-1/timer")
        assert response.status == 200
        assert (await response.json())["source"] == "redis"
        assert (await (await session.get(f"{base}/readyz")).json()) == {"kafka": False, "redis": True}

        for node in stack.kafka.nodes:
            stack.kafka.start_node(node)
        await asyncio.to_thread(stack.kafka.wait_ready)
        await eventually(feed_says("restored"), 60, "the feed-restored notice")
        await socket_1.stop()
