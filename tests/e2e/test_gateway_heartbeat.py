"""The gateway's WebSocket heartbeat (app/gateway/heartbeat.py), against a real gateway process:
a socket silent for AUCTION_TIMER_WS_HEARTBEAT_S gets a PING; one that answers stays, one that
does not is reset half an interval later (no close frame: the peer is not reading)."""

from __future__ import annotations

import aiohttp
from aiohttp import WSMsgType
from prometheus_client.parser import text_string_to_metric_families

from tests.support.stack import Stack

HEARTBEAT_S = 6  # patience 3 s: a PONG from a client on this machine comes long before that


async def resets(session: aiohttp.ClientSession, base: str) -> float:
    text = await (await session.get(f"{base}/metrics")).text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "auctions_gateway_heartbeat_resets_total"
    )


async def test_a_socket_that_answers_pings_stays_and_a_silent_one_is_reset(stack: Stack) -> None:
    _, base = stack.start_gateway(AUCTION_TIMER_WS_HEARTBEAT_S=str(HEARTBEAT_S))
    url = base.replace("http", "ws", 1) + "/auctions/heartbeat-1/updates"
    async with aiohttp.ClientSession() as session:
        assert await resets(session, base) == 0
        answering = await session.ws_connect(url, autoping=False)
        silent = await session.ws_connect(url, autoping=False)  # reads nothing, answers nothing, until below

        pings = 0
        while pings < 3:  # three intervals: the silent one's ping and its patience are long over
            msg = await answering.receive(timeout=HEARTBEAT_S * 3)
            assert msg.type in (WSMsgType.TEXT, WSMsgType.PING), msg
            if msg.type == WSMsgType.PING:
                pings += 1
                await answering.pong(msg.data)
        assert not answering.closed

        kinds: list[WSMsgType] = []
        while not kinds or kinds[-1] in (WSMsgType.TEXT, WSMsgType.PING):
            kinds.append((await silent.receive(timeout=HEARTBEAT_S * 3)).type)
        assert WSMsgType.PING in kinds
        assert WSMsgType.CLOSE not in kinds  # reset, not closed: it would not have read a close frame
        assert await resets(session, base) == 1

        await answering.send_json({"type": "ping", "client_time_ms": 1})
        while (msg := await answering.receive(timeout=HEARTBEAT_S * 3)).type == WSMsgType.PING:
            await answering.pong(msg.data)
        assert msg.type == WSMsgType.TEXT and msg.json()["type"] in ("pong", "tick"), msg
        await answering.close()
