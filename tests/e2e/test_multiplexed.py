"""WS /updates: one socket follows many auctions, against real Kafka, Redis, worker and gateway
processes. Every auction's messages reach it in order with no gap, framed once for it and for
the sockets that follow single auctions; its limits answer with their documented codes."""

from __future__ import annotations

import asyncio
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import orjson

from streams import events as ev
from streams import outputs, topics
from tests.e2e.test_gateway_edges import FLOOD_PACE_S
from tests.support import raw_ws
from tests.support.contracts import check_asyncapi
from tests.support.events import now_ms, record
from tests.support.gateway import Recorder, timer
from tests.support.kafka import kafka_io, produce
from tests.support.stack import Stack
from tests.support.waiting import eventually

# Ten minutes long; any bid extends it (the window covers the whole auction) to 15 minutes after the bid.
POLICY = ev.Policy(soft_close_window_ms=3_600_000, extension_ms=900_000, max_extension_ms=600_000)
UPDATES = ("tick", "registered", "started", "extended", "completed", "cancelled")


def ws_base(base: str) -> str:
    return base.replace("http", "ws", 1)


def all_snapshots(recorders: list[Recorder]) -> Callable[[], Awaitable[bool]]:
    return lambda: asyncio.sleep(0, result=all(r.messages for r in recorders))


def assert_in_order_without_gaps(messages: list[dict[str, Any]], auction_id: str) -> None:
    """One auction's messages on one socket: its snapshot, then seq + 1, + 2, ..., versions never
    going back, each as docs/asyncapi.yaml says."""
    snapshot, *updates = messages
    assert snapshot["type"] == "snapshot" and snapshot["auction_id"] == auction_id
    check_asyncapi("WsSnapshot", snapshot)
    assert [m["seq"] for m in updates] == list(range(snapshot["seq"] + 1, snapshot["seq"] + 1 + len(updates)))
    for m in updates:
        assert m["type"] in UPDATES and m["auction_id"] == auction_id
        check_asyncapi("WsUpdate", m)
    versions = ([snapshot["state"]["version"]] if snapshot["state"] else []) + [m["version"] for m in updates]
    assert versions == sorted(versions)


async def test_one_socket_follows_500_auctions_beside_1000_single_auction_sockets(stack: Stack) -> None:
    stack.start_worker()
    _, base = stack.start_gateway(AUCTION_TIMER_WS_MAX_PER_ADDRESS="2000", AUCTION_TIMER_WS_SEND_QUEUE="256")
    ids = [f"mux-{i:03d}" for i in range(500)]
    start = now_ms()
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        await produce(producer, *(record(ev.AuctionStarted(a, start, start + 600_000, POLICY, "m")) for a in ids))
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def listed() -> bool:
            body = await (await session.get(f"{base}/auctions", params={"limit": "500"})).json()
            return len(body["auctions"]) == 500

        await eventually(listed, 60, "500 auctions in the projection")
        singles: list[Recorder] = []
        followed: list[str] = []
        for wave in range(10):  # 1,000 sockets, one auction each: half per-auction, half /updates
            batch = ids[(wave % 5) * 100 : (wave % 5) * 100 + 100]
            if wave < 5:
                urls = [f"{ws_base(base)}/auctions/{a}/updates" for a in batch]
                sockets = await asyncio.gather(*(session.ws_connect(url) for url in urls))
            else:
                sockets = await asyncio.gather(*(session.ws_connect(f"{ws_base(base)}/updates") for _ in batch))
                subscribes = [{"type": "subscribe", "auctions": [a]} for a in batch]
                await asyncio.gather(*(ws.send_json(m) for ws, m in zip(sockets, subscribes, strict=True)))
            recorders = [Recorder(ws).start() for ws in sockets]
            # A wave at a time: more snapshot reads at once than Redis connections in the gateway's
            # pool (100) fail (MaxConnectionsError) and are answered from memory or null.
            await eventually(all_snapshots(recorders), 30, "a wave's snapshots")
            singles += recorders
            followed += batch
        many = Recorder(await session.ws_connect(f"{ws_base(base)}/updates")).start()
        await many.ws.send_json({"type": "subscribe", "auctions": ids})
        await eventually(lambda: asyncio.sleep(0, result=len(many.of_type("snapshot")) == 500), 30, "500 snapshots")

        # Changes while everything flows: 50 extensions and 10 cancellations.
        async with kafka_io(stack.kafka.bootstrap) as (producer, _):
            for auction_id in ids[:50]:
                await produce(producer, record(ev.BidPlaced(auction_id, f"b-{auction_id}", "u", "5", now_ms())))
            for auction_id in ids[50:60]:
                await produce(producer, record(ev.AuctionCancelled(auction_id, "withdrawn", "admin")))

        def changes_and_ticks() -> bool:
            kinds: dict[str, list[str]] = {}
            for m in many.messages:
                kinds.setdefault(m.get("auction_id", ""), []).append(m["type"])
            return (
                all("extended" in kinds.get(a, []) and kinds[a][-3:] == ["tick"] * 3 for a in ids[:50])
                and all("cancelled" in kinds.get(a, []) for a in ids[50:60])
                and all(kinds.get(a, []).count("tick") >= 3 for a in ids[60:])
            )

        await eventually(lambda: asyncio.sleep(0, result=changes_and_ticks()), 90, "every change and three ticks")
        await many.stop()
        await asyncio.gather(*(r.stop() for r in singles))

    assert not many.of_type("error") and many.closed_code in (None, 1000)
    for auction_id in ids:
        assert_in_order_without_gaps(many.of_auction(auction_id), auction_id)
    for auction_id in ids[:50]:
        [extended] = [m for m in many.of_auction(auction_id) if m["type"] == "extended"]
        assert (extended["version"], extended["extension_count"]) == (2, 1)
        assert extended["ends_at_ms"] > extended["original_ends_at_ms"]
    for auction_id in ids[50:60]:
        assert [m["status"] for m in many.of_auction(auction_id) if m["type"] == "cancelled"] == ["cancelled"]
    # Every single-auction socket (subscribed before the multiplexed one, closed after it) got the
    # very same messages as the multiplexed one, seq for seq: one channel, one frame for all.
    for recorder, auction_id in zip(singles, followed, strict=True):
        assert_in_order_without_gaps(recorder.of_auction(auction_id), auction_id)
        mine = {m["seq"]: m for m in recorder.of_auction(auction_id) if m["type"] != "snapshot"}
        theirs = {m["seq"]: m for m in many.of_auction(auction_id) if m["type"] != "snapshot"}
        assert theirs and all(mine[seq] == message for seq, message in theirs.items())


async def test_limits_answer_with_their_documented_codes(stack: Stack) -> None:
    _, base = stack.start_gateway(AUCTION_TIMER_WS_MAX_SUBSCRIPTIONS="5", AUCTION_TIMER_WS_SUBSCRIBE_RATE_PER_MIN="4")
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{ws_base(base)}/updates")

        async def ask(message: dict[str, Any]) -> dict[str, Any]:
            await ws.send_json(message)
            reply: dict[str, Any] = await ws.receive_json(timeout=10)
            return reply

        # Unknown auctions: a snapshot each, state null, as on the single-auction socket.
        await ws.send_json({"type": "subscribe", "auctions": ["a-1", "a-2", "a-1"]})
        snapshots = [await ws.receive_json(timeout=10) for _ in range(2)]
        assert [(s["type"], s["auction_id"], s["state"]) for s in snapshots] == [
            ("snapshot", "a-1", None), ("snapshot", "a-2", None)
        ]  # fmt: skip
        for s in snapshots:
            check_asyncapi("WsSnapshot", s)
        refused = await ask({"type": "subscribe", "auctions": ["a-3", "a-4", "a-5", "a-6"]})
        assert (refused["code"], refused["limit"], refused["following"]) == ("too_many_subscriptions", 5, 2)
        check_asyncapi("WsError", refused)
        for bad in ({"type": "subscribe", "auctions": ["ok", "not ok"]}, {"type": "subscribe", "auctions": []},
                    {"type": "subscribe", "auctions": "a-3"}, {"type": "unsubscribe"}):  # fmt: skip
            assert (await ask(bad))["code"] == "bad_auctions"
        assert await ask({"type": "unsubscribe", "auctions": ["a-2", "never"]}) == {
            "type": "unsubscribed", "auctions": ["a-2", "never"]
        }  # fmt: skip
        await ws.send_json({"type": "subscribe", "auctions": ["a-3"]})  # the third of four a minute
        assert (await ws.receive_json(timeout=10))["auction_id"] == "a-3"
        await ws.send_json({"type": "subscribe", "auctions": ["a-4"]})  # the fourth
        assert (await ws.receive_json(timeout=10))["auction_id"] == "a-4"
        limited = await ask({"type": "subscribe", "auctions": ["a-5"]})
        assert limited["code"] == "rate_limited" and 1 <= limited["retry_after_ms"] <= 15_000
        check_asyncapi("WsError", limited)
        unknown = await ask({"type": "hello"})
        assert unknown["code"] == "unknown_type" and "subscribe" in unknown["message"]
        pong = await ask({"type": "ping", "client_time_ms": 1.5})
        assert pong["type"] == "pong" and pong["client_time_ms"] == 1.5
        await ws.send_str("x" * 70_000)  # over the 64 KiB a frame may have here
        closing = await ws.receive(timeout=10)
        assert closing.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
        assert ws.close_code == 1009

        metrics = await (await session.get(f"{base}/metrics")).text()
        counted = {line.split('"')[1]: float(line.split()[-1]) for line in metrics.splitlines()
                   if line.startswith("auctions_gateway_ws_subscribe_requests_total{")}  # fmt: skip
        assert counted == {"accepted": 3.0, "too_many_subscriptions": 1.0, "bad_auctions": 3.0, "rate_limited": 1.0}


async def test_a_slow_multiplexed_consumer_is_closed_while_others_keep_receiving(stack: Stack) -> None:
    # A close grace longer than the test, so the stuck client can read its close frame at the end
    # (as in tests/e2e/test_gateway_edges.py).
    _, base = stack.start_gateway(AUCTION_TIMER_WS_SEND_QUEUE="16", AUCTION_TIMER_WS_CLOSE_GRACE_S="60")
    port = urllib.parse.urlparse(base).port
    assert port is not None
    states = [timer("slow-mux-1", 600_000), timer("slow-mux-2", 600_000)]
    subscribe = orjson.dumps({"type": "subscribe", "auctions": ["slow-mux-1", "slow-mux-2"]})
    async with aiohttp.ClientSession() as session, kafka_io(stack.kafka.bootstrap) as (producer, _):
        healthy = Recorder(await session.ws_connect(f"{ws_base(base)}/updates")).start()
        await healthy.ws.send_str(subscribe.decode())
        stuck = await asyncio.to_thread(raw_ws.upgrade, port, "/updates", rcvbuf=4096)
        assert stuck.status == 101
        stuck.send_frame(raw_ws.TEXT, subscribe)
        await eventually(lambda: asyncio.sleep(0, result=len(healthy.of_type("snapshot")) == 2), 10, "snapshots")
        # A flood on the feed: 2,000 ticks of ~2 KB for each auction, far more than the stuck
        # socket's buffers and its allowance (16 messages plus one per auction) hold.
        padded = [
            outputs.tick(s, 1, now_ms()).value.replace(b'"seq":1', b'"pad":"' + b"x" * 2000 + b'","seq":1')
            for s in states
        ]
        for i in range(2_000):
            for state, value in zip(states, padded, strict=True):
                await producer.send(topics.TICKS, value, key=state.auction_id.encode())
            if i % 5 == 4:
                await producer.flush()
                await asyncio.sleep(FLOOD_PACE_S)
        await eventually(lambda: asyncio.sleep(0, result=len(healthy.of_type("tick")) >= 4_000), 60, "all ticks")
        received = await asyncio.to_thread(stuck.read_until_closed)
        stuck.close()
        assert raw_ws.close_code(raw_ws.server_frames(received)) == 4008
        assert not healthy.ws.closed
        metrics = await (await session.get(f"{base}/metrics")).text()
        closes = [line for line in metrics.splitlines() if line.startswith("auctions_gateway_slow_consumer_closes")]
        assert closes and float(closes[0].split()[-1]) == 1.0
        await healthy.stop()
    for state in states:
        assert_in_order_without_gaps(healthy.of_auction(state.auction_id), state.auction_id)
