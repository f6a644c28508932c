"""WS /auctions/{id}/updates: a snapshot at once, then numbered updates; ping gets pong.

Before the upgrade: the id is validated, the Origin checked against the allow-list and
the per-address connection cap applied. After it: frames over 4 KiB close the socket
with 1009, bad JSON gets an error frame, a flood of frames closes it with 1008. A socket
holds its place under the cap until it is really closed (app/gateway/closing.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from app.gateway.closing import GatewayWebSocket, let_go
from app.gateway.context import GATEWAY, Gateway
from app.gateway.hub import Channel, Subscriber, encode
from app.gateway.metrics import CONNECTIONS, CONNECTS
from app.gateway.rest import error
from app.gateway.security import BAD_AUCTION_ID, client_address, valid_auction_id
from app.gateway.timers import Unavailable

MAX_FRAME_BYTES = 4096  # the contract: frames over 4 KiB close with 1009
HEARTBEAT_S = 20.0
MAX_FRAMES_PER_S = 20
POLICY_VIOLATION = 1008


async def updates(request: web.Request) -> web.StreamResponse:
    gw = request.app[GATEWAY]
    auction_id = request.match_info["auction_id"]
    if not valid_auction_id(auction_id):
        CONNECTS.labels("bad_id").inc()
        return error(400, "bad_request", BAD_AUCTION_ID)
    if not gw.origins.allows(request.headers.get("Origin")):
        CONNECTS.labels("forbidden_origin").inc()
        return error(403, "forbidden_origin", "this Origin may not open WebSockets here")
    transport = request.transport
    if transport is None:  # the client is already gone
        return error(400, "bad_request", "the connection closed before the upgrade")
    address = client_address(request)
    if not gw.connections.acquire(address):
        CONNECTS.labels("over_capacity").inc()
        return error(429, "too_many_connections", "too many WebSockets from this address", **{"Retry-After": "5"})
    try:
        ws = GatewayWebSocket(
            close_grace_s=gw.settings.ws_close_grace_s,
            heartbeat=HEARTBEAT_S,
            max_msg_size=MAX_FRAME_BYTES + 1,  # aiohttp refuses a message of max_msg_size itself
            autoping=False,  # pings are answered in read_client, so they count toward the frame limit
            compress=False,
            timeout=5.0,
        )
        await ws.prepare(request)
        CONNECTS.labels("accepted").inc()
        CONNECTIONS.inc()
        try:
            await serve(gw, ws, transport, auction_id)
        finally:
            try:
                # The socket counts (here and under the cap) until it is really closed.
                await let_go(transport, gw.settings.ws_close_grace_s)
            finally:
                CONNECTIONS.dec()
        return ws
    finally:
        gw.connections.release(address)


async def snapshot(gw: Gateway, auction_id: str, channel: Channel) -> dict[str, Any]:
    """The newest state of Redis and memory, numbered with the channel's seq as it stands once
    that read is done: it covers every message published up to then."""
    try:
        view = await gw.timers.read(auction_id)
        state = gw.timers.present(view, gw.tick_interval_ms) if view else None
    except Unavailable:
        state = None
    return {
        "type": "snapshot",
        "seq": channel.seq,
        "auction_id": auction_id,
        "state": state,
        "feed": "live" if gw.feed.live else "interrupted",
        "server_time_ms": gw.clock(),
        "tick_interval_ms": gw.tick_interval_ms,
    }


async def serve(gw: Gateway, ws: web.WebSocketResponse, transport: asyncio.Transport, auction_id: str) -> None:
    sub = Subscriber(ws, transport, auction_id, gw.settings.ws_send_queue)
    channel = gw.hub.subscribe(sub)
    try:
        with contextlib.suppress(ConnectionResetError):  # the client left: nobody to answer
            # Subscribed first, so nothing published while Redis is read is missed.
            first = await snapshot(gw, auction_id, channel)
            await ws.send_str(encode(first))
            sub.start(after_seq=first["seq"])
            await read_client(gw, ws)
    finally:
        gw.hub.unsubscribe(sub)


async def read_client(gw: Gateway, ws: web.WebSocketResponse) -> None:
    """Answer the client's frames until it goes. Every frame counts toward MAX_FRAMES_PER_S,
    control frames (ping, pong) too: a flood of them costs the gateway as much as any."""
    window_start, frames = time.monotonic(), 0
    async for msg in ws:
        now = time.monotonic()
        if now - window_start >= 1.0:
            window_start, frames = now, 0
        frames += 1
        if frames > MAX_FRAMES_PER_S:
            await ws.close(code=POLICY_VIOLATION, message=b"too many frames")
            return
        if msg.type == WSMsgType.PING:
            await ws.pong(msg.data)
        elif msg.type == WSMsgType.PONG:
            continue  # an answer to our heartbeat
        elif msg.type == WSMsgType.ERROR:
            return  # aiohttp has closed the socket (1009, a protocol error)
        elif msg.type != WSMsgType.TEXT:
            await ws.send_str(encode({"type": "error", "code": "text_only", "message": "send JSON text frames"}))
        else:
            await ws.send_str(encode(answer(gw, msg.data)))


def answer(gw: Gateway, text: str) -> dict[str, Any]:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return {"type": "error", "code": "bad_json", "message": "frames must be JSON objects"}
    if not isinstance(message, dict):
        return {"type": "error", "code": "bad_json", "message": "frames must be JSON objects"}
    if message.get("type") == "ping":
        client_time = message.get("client_time_ms")
        if not isinstance(client_time, (int, float)) or isinstance(client_time, bool):
            return {"type": "error", "code": "bad_ping", "message": "ping needs a numeric client_time_ms"}
        return {"type": "pong", "client_time_ms": client_time, "server_time_ms": gw.clock()}
    return {"type": "error", "code": "unknown_type", "message": "clients may send: ping"}
