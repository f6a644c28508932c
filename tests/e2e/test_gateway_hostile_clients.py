"""What a hostile or careless WebSocket client gets from a real gateway process (issue 13)."""

from __future__ import annotations

import asyncio
import urllib.parse

import aiohttp

from streams import outputs, topics
from streams.fold import apply
from tests.support.events import envelope, now_ms, started
from tests.support.kafka import kafka_io
from tests.support.raw_ws import ESTABLISHED, tcp_state, upgrade
from tests.support.stack import Stack
from tests.support.waiting import eventually


def port_of(base: str) -> int:
    port = urllib.parse.urlparse(base).port
    assert port is not None
    return port


async def metric(session: aiohttp.ClientSession, base: str, name: str) -> float:
    text = await (await session.get(f"{base}/metrics")).text()
    values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
    return values[0] if values else 0.0


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
