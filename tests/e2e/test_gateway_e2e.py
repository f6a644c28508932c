"""The gateway end to end: real Kafka, Redis, worker and gateway processes, real sockets."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest

from streams import events as ev
from streams import topics
from tests.support.contracts import check_asyncapi
from tests.support.events import now_ms, record
from tests.support.gateway import Recorder
from tests.support.kafka import kafka_io, produce, produce_bid_placed_at, worker_folding
from tests.support.stack import Stack
from tests.support.waiting import eventually

POLICY = ev.Policy(soft_close_window_ms=2_000, extension_ms=3_000, max_extension_ms=60_000)
ENDS_IN_MS = 8_000


def ws_url(base: str, auction_id: str) -> str:
    return base.replace("http", "ws") + f"/auctions/{auction_id}/updates"


def assert_numbered(messages: list[dict]) -> None:
    """Updates after the snapshot are numbered snapshot.seq + 1, + 2, ... with no gap."""
    snapshot, *updates = messages
    assert snapshot["type"] == "snapshot"
    seqs = [m["seq"] for m in updates if "seq" in m]
    assert seqs == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(seqs)))


async def test_registration_ticks_extension_and_completion_reach_the_socket(stack: Stack) -> None:
    stack.start_worker()
    _, base = stack.start_gateway()
    async with (
        aiohttp.ClientSession() as session,
        kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch),
    ):
        await worker_folding(producer, watch)
        socket = Recorder(await session.ws_connect(ws_url(base, "e2e-1"))).start()
        snapshot = await eventually(lambda: asyncio.sleep(0, result=socket.of_type("snapshot")), 30, "the snapshot")
        assert snapshot[0]["state"] is None  # not registered yet; the socket stays open for it
        # The auction's times are counted from now, with a worker already folding.
        start = now_ms()
        ends = start + ENDS_IN_MS
        await produce(producer, record(ev.AuctionStarted("e2e-1", start, ends, POLICY, "maker-1")))
        await eventually(lambda: asyncio.sleep(0, result=socket.of_type("registered")), 30, "registered")
        # A bid at the start of the soft-close window: it has the window (and a lead) to reach the log.
        placed = ends - POLICY.soft_close_window_ms
        await produce_bid_placed_at(producer, "e2e-1", placed)
        [extended] = await eventually(lambda: asyncio.sleep(0, result=socket.of_type("extended")), 30, "extended")
        assert (extended["ends_at_ms"], extended["version"]) == (placed + 3_000, 2)
        [completed] = await eventually(lambda: asyncio.sleep(0, result=socket.of_type("completed")), 60, "completed")
        assert completed["status"] == "ended" and completed["version"] == 3
        assert completed["ends_at_ms"] == placed + 3_000 <= completed["ended_at_ms"]  # never early
        print(f"completed {completed['ended_at_ms'] - completed['ends_at_ms']} ms after its end")
        await socket.stop()

    # Ticks came while it ran (one a second, for 9 s), each carrying a state the auction had.
    ticks = socket.of_type("tick")
    assert len(ticks) >= 2
    had = {(1, ends), (2, placed + 3_000), (3, placed + 3_000)}
    assert {(t["version"], t["ends_at_ms"]) for t in ticks} <= had, ticks
    assert_numbered(socket.messages)
    check_asyncapi("WsSnapshot", socket.messages[0])
    for message in socket.messages[1:]:
        check_asyncapi("WsUpdate", message)
    versions = [m["version"] for m in socket.messages[1:]]
    assert versions == sorted(versions)  # never backwards


@pytest.mark.slow
async def test_a_thousand_subscribers_get_every_tick_in_order(stack: Stack) -> None:
    stack.start_worker()
    _, base = stack.start_gateway(AUCTION_TIMER_WS_MAX_PER_ADDRESS="2000", AUCTION_TIMER_WS_SEND_QUEUE="256")
    start = now_ms()
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        await produce(producer, record(ev.AuctionStarted("crowd-1", start, start + 600_000, POLICY, "maker-1")))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = []
        for _ in range(10):  # in waves of 100, as a crowd arrives
            sockets += await asyncio.gather(*(session.ws_connect(ws_url(base, "crowd-1")) for _ in range(100)))
        recorders = [Recorder(ws).start() for ws in sockets]

        async def everyone_has_five_ticks() -> bool:
            return all(len(r.of_type("tick")) >= 5 for r in recorders)

        await eventually(everyone_has_five_ticks, 120, "five ticks on every one of 1,000 sockets")
        await asyncio.gather(*(r.stop() for r in recorders))
    for r in recorders:
        assert_numbered(r.messages)
        ticks = [m["server_time_ms"] for m in r.of_type("tick")]
        assert ticks == sorted(ticks)
    # Everyone saw the same ticks: the ones published after the last socket subscribed.
    latest_first = max(r.of_type("tick")[0]["server_time_ms"] for r in recorders)
    common = [
        set(m["server_time_ms"] for m in r.of_type("tick") if m["server_time_ms"] >= latest_first) for r in recorders
    ]
    assert all(c == common[0] for c in common)
    assert len(common[0]) >= 1
