"""What hostile or careless clients and producers get from a real gateway process (issue 13)."""

from __future__ import annotations

import asyncio
import urllib.parse

import aiohttp
import orjson
from prometheus_client.parser import text_string_to_metric_families

from streams import outputs, topics
from streams.fold import apply
from tests.support.events import envelope, now_ms, started
from tests.support.gateway import Recorder
from tests.support.kafka import kafka_io
from tests.support.raw_ws import (
    CLOSE,
    ESTABLISHED,
    PING,
    PONG,
    TEXT,
    close_code,
    frame,
    server_frames,
    tcp_state,
    upgrade,
)
from tests.support.stack import Stack
from tests.support.waiting import eventually


def port_of(base: str) -> int:
    port = urllib.parse.urlparse(base).port
    assert port is not None
    return port


async def samples(session: aiohttp.ClientSession, base: str, name: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The samples of one metric on the gateway's /metrics: the values of `labels` -> value."""
    text = await (await session.get(f"{base}/metrics")).text()
    return {
        tuple(sample.labels[label] for label in labels): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name
    }


async def metric(session: aiohttp.ClientSession, base: str, name: str) -> float:
    return sum((await samples(session, base, name)).values())


async def status_of_upgrade(port: int, path: str) -> int:
    raw = await asyncio.to_thread(upgrade, port, path)
    raw.close()
    return raw.status


async def accepted(port: int, path: str) -> bool:
    return await status_of_upgrade(port, path) == 101


async def test_a_dropped_slow_consumer_is_reset_and_holds_its_cap_slot_until_then(stack: Stack) -> None:
    _, base = stack.start_gateway(AUCTION_TIMER_WS_SEND_QUEUE="4", AUCTION_TIMER_WS_MAX_PER_ADDRESS="2")
    port, path = port_of(base), "/auctions/leak-1/updates"
    # Two clients that read the 101 and nothing more, with small receive buffers: the cap is full.
    stuck = [await asyncio.to_thread(upgrade, port, path, rcvbuf=4096) for _ in range(2)]
    assert [s.status for s in stuck] == [101, 101]
    state, _ = apply(None, envelope(started("leak-1", now_ms(), now_ms() + 600_000), time_ms=now_ms()))
    assert state is not None
    tick = outputs.tick(state, 1, now_ms()).value.replace(b'"seq":1', b'"pad":"' + b"x" * 2000 + b'","seq":1')

    def server_side_open() -> list[int]:
        return [s.local_port for s in stuck if tcp_state(port, s.local_port) == ESTABLISHED]

    async with aiohttp.ClientSession() as session, kafka_io(stack.kafka.bootstrap) as (producer, _):

        async def both_dropped() -> bool:
            for _ in range(50):
                await producer.send(topics.TICKS, tick, key=b"leak-1")
            await producer.flush()
            return await metric(session, base, "auctions_gateway_slow_consumer_closes_total") >= 2

        await eventually(both_dropped, 60, "both stuck sockets dropped as slow consumers")

        # The cap counts a socket until the gateway has really closed it: a third one is refused
        # while a stuck one is still established on the gateway's side.
        third = await status_of_upgrade(port, path)
        still_open = server_side_open()
        assert third == 429 or not still_open, f"accepted while {still_open} were still open"

        # The stuck clients never read their close frame: the gateway resets them, its kernel
        # drops what was queued, and their places under the cap come back.
        await eventually(lambda: asyncio.sleep(0, result=not server_side_open()), 30, "the stuck sockets reset")
        for s in stuck:
            await asyncio.to_thread(s.read_until_closed)
            s.close()
        await eventually(lambda: accepted(port, path), 10, "a new socket accepted")


def forged(good: bytes, **data: object) -> bytes:
    doc = orjson.loads(good)
    doc["data"].update(data)
    return orjson.dumps(doc)


async def test_forged_feed_records_are_skipped_and_counted_and_the_fan_out_goes_on(stack: Stack) -> None:
    _, base = stack.start_gateway()
    state, _ = apply(None, envelope(started("forge-1", now_ms(), now_ms() + 600_000), time_ms=now_ms()))
    assert state is not None
    first = outputs.tick(state, 1, now_ms()).value
    async with aiohttp.ClientSession() as session, kafka_io(stack.kafka.bootstrap) as (producer, _):
        ws = Recorder(await session.ws_connect(base.replace("http", "ws") + "/auctions/forge-1/updates")).start()
        await eventually(lambda: asyncio.sleep(0, result=ws.of_type("snapshot")), 10, "the snapshot")
        await producer.send_and_wait(topics.TICKS, first, key=b"forge-1")
        await eventually(lambda: asyncio.sleep(0, result=ws.of_type("tick")), 30, "the first tick")
        # Same key, same partition: every forgery is consumed before the good tick that follows.
        forgeries = [
            forged(first, version="1"),  # the record that stopped all fan-out (issue 13)
            forged(first, auction_id="forge-1\n"),
            forged(first, status="paused"),
            forged(first, pad="x" * 70_000),  # over AUCTION_TIMER_MAX_EVENT_BYTES
            b"{not json",
            b"",
        ]
        for value in forgeries:
            await producer.send_and_wait(topics.TICKS, value, key=b"forge-1")
        later = outputs.tick(state, 2, now_ms()).value
        await producer.send_and_wait(topics.TICKS, later, key=b"forge-1")
        await eventually(lambda: asyncio.sleep(0, result=len(ws.of_type("tick")) == 2), 30, "the tick after them")
        assert [m["seq"] for m in ws.of_type("tick")] == [1, 2]  # nothing forged reached the socket
        assert all(m["version"] == 1 and m["status"] == "running" for m in ws.of_type("tick"))
        skipped = await samples(session, base, "auctions_gateway_feed_skipped_total", "topic", "reason")
        assert skipped == {
            (topics.TICKS, "invalid_value"): 3.0,
            (topics.TICKS, "oversized"): 1.0,
            (topics.TICKS, "not_json"): 1.0,
            (topics.TICKS, "empty"): 1.0,
        }
        assert (await (await session.get(f"{base}/readyz")).json())["kafka"] is True
        await ws.stop()


def ping_text(size: int | None = None) -> bytes:
    """An application ping, padded to exactly `size` bytes when given."""
    text = b'{"type":"ping","client_time_ms":1,"pad":""}'
    return text if size is None else text.replace(b'"pad":""', b'"pad":"' + b"x" * (size - len(text)) + b'"')


def pongs(frames: list[tuple[int, bytes]]) -> int:
    return sum(1 for opcode, payload in frames if opcode == TEXT and b'"pong"' in payload)


def closed(frames: list[tuple[int, bytes]]) -> bool:
    return any(opcode == CLOSE for opcode, _ in frames)


async def test_frames_masks_sizes_and_floods(stack: Stack) -> None:
    _, base = stack.start_gateway()
    port, path = port_of(base), "/auctions/frames-1/updates"

    def session(send: bytes, until: object = closed, early: bool = False) -> list[tuple[int, bytes]]:
        raw = upgrade(port, path, extra=send if early else b"")
        assert raw.status == 101
        if not early:
            raw.sock.sendall(send)
        frames = server_frames(raw.read_until(until))  # type: ignore[arg-type]
        raw.close()
        return frames

    # Exactly 4 KiB is accepted ("over 4 KiB" closes); one byte more is a 1009.
    assert pongs(await asyncio.to_thread(session, frame(TEXT, ping_text(4096)), pongs)) == 1
    over = await asyncio.to_thread(session, frame(TEXT, ping_text(4097)))
    assert close_code(over) == 1009

    # RFC 6455 5.1: unmasked client frames close the connection with 1002, unanswered, whether
    # they come after the 101 or in the same packet as the upgrade request.
    for early in (False, True):
        refused = await asyncio.to_thread(session, frame(TEXT, ping_text(), masked=False), early=early)
        assert close_code(refused) == 1002 and pongs(refused) == 0

    # More than 20 frames a second close with 1008: text frames, and control frames too.
    for opcode, payload in ((TEXT, ping_text()), (PING, b"p")):
        flood = await asyncio.to_thread(session, frame(opcode, payload) * 200)
        assert close_code(flood) == 1008
        answered = pongs(flood) if opcode == TEXT else sum(1 for o, _ in flood if o == PONG)
        assert answered == 20


async def test_only_listed_origins_and_the_gateways_own_may_open_sockets(stack: Stack) -> None:
    _, base = stack.start_gateway()  # AUCTION_TIMER_ALLOWED_ORIGINS lists http://allowed.test
    port, path = port_of(base), "/auctions/origin-1/updates"

    def status(origin: str | None, host: str | None = None) -> int:
        raw = upgrade(port, path, origin=origin, host=host)
        raw.close()
        return raw.status

    # A DNS-rebinding page: its name resolves to the gateway, so Origin and Host agree.
    rebinding = f"evil.test:{port}"
    assert await asyncio.to_thread(status, f"http://{rebinding}", rebinding) == 403
    for refused in ("http://evil.test", "null", f"http://127.0.0.1:{port + 1}", "https://allowed.test"):
        assert await asyncio.to_thread(status, refused) == 403, refused
    # The gateway's own pages (its configured address, loopback by any name), the listed origin
    # (case does not matter in a host), and clients that send no Origin (not browsers).
    for allowed in (f"http://127.0.0.1:{port}", f"http://localhost:{port}", "http://allowed.test",
                    "HTTP://ALLOWED.TEST", None):  # fmt: skip
        assert await asyncio.to_thread(status, allowed) == 101, allowed
