"""WebSockets: the upgrade and the read loop every socket shares, and WS /auctions/{id}/updates
(one auction: a snapshot at once, then numbered updates; ping gets pong).

Before the upgrade: the Origin is checked against the allow-list and the per-address
connection cap applied. After it: frames over the endpoint's limit close the socket with
1009, bad JSON gets an error frame, a flood of frames closes it with 1008. A socket holds its
place under the cap until it is really closed (app/gateway/closing.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from app.gateway.closing import GatewayWebSocket, let_go
from app.gateway.context import GATEWAY, Gateway
from app.gateway.hub import Channel, Connection, encode
from app.gateway.metrics import CONNECTIONS, CONNECTS
from app.gateway.rest import error
from app.gateway.security import BAD_AUCTION_ID, client_address, valid_auction_id
from app.gateway.timers import Unavailable

MAX_FRAME_BYTES = 4096  # the contract: frames over 4 KiB close with 1009
MAX_FRAMES_PER_S = 20
POLICY_VIOLATION = 1008

Reply = dict[str, Any] | None
Handlers = Mapping[str, Callable[[dict[str, Any]], Awaitable[Reply]]]
Session = Callable[[Gateway, Connection, str], Awaitable[None]]


async def updates(request: web.Request) -> web.StreamResponse:
    auction_id = request.match_info["auction_id"]
    if not valid_auction_id(auction_id):
        CONNECTS.labels("bad_id").inc()
        return error(400, "bad_request", BAD_AUCTION_ID)

    async def follow_one(gw: Gateway, conn: Connection, address: str) -> None:
        await follow(gw, conn, auction_id)
        await read_client(gw, conn, {})

    return await upgrade(request, MAX_FRAME_BYTES, follow_one)


async def upgrade(request: web.Request, max_frame_bytes: int, session: Session) -> web.StreamResponse:
    """Origin and per-address cap, then the upgrade; `session` runs for the socket's life."""
    gw = request.app[GATEWAY]
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
            max_msg_size=max_frame_bytes + 1,  # aiohttp refuses a message of max_msg_size itself
            autoping=False,  # pings are answered in read_client, so they count toward the frame limit
            # No heartbeat here: app/gateway/heartbeat.py pings every socket from one loop.
            compress=False,
            timeout=5.0,
        )
        await ws.prepare(request)
        CONNECTS.labels("accepted").inc()
        CONNECTIONS.inc()
        conn = Connection(ws, transport, gw.settings.ws_send_queue)
        gw.hub.attach(conn)
        try:
            with contextlib.suppress(ConnectionResetError):  # the client left: nobody to answer
                await session(gw, conn, address)
        finally:
            gw.hub.detach(conn)
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
    that read is done: it covers every message published up to then. What Redis answered is
    remembered too: the gateway's own ticks are built from memory."""
    try:
        view = await gw.timers.read(auction_id)
        state = gw.timers.present(view, gw.tick_interval_ms) if view else None
        if view is not None and view.source == "redis":
            gw.memory.update(view.state)
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


async def follow(gw: Gateway, conn: Connection, auction_id: str) -> None:
    """Subscribe `conn` to an auction: subscribed first, so nothing published while Redis is read
    is missed; then the snapshot; then what was published meanwhile."""
    sub, channel = gw.hub.subscribe(conn, auction_id)
    first = await snapshot(gw, auction_id, channel)
    if conn.closing:
        return
    await conn.ws.send_str(encode(first))
    sub.start(after_seq=first["seq"])


async def read_client(gw: Gateway, conn: Connection, handlers: Handlers) -> None:
    """Answer the client's frames until it goes: ping here, the other types by `handlers`.
    Every frame counts toward MAX_FRAMES_PER_S, control frames (ping, pong) too: a flood of them
    costs the gateway as much as any. Any frame answers the heartbeat."""
    ws = conn.ws
    window_start, frames = time.monotonic(), 0
    async for msg in ws:
        now = conn.heard_at = time.monotonic()
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
            await ws.send_str(encode(ws_error("text_only", "send JSON text frames")))
        elif (reply := await answer(gw, msg.data, handlers)) is not None and not ws.closed:
            await ws.send_str(encode(reply))


def ws_error(code: str, message: str, **detail: Any) -> dict[str, Any]:
    return {"type": "error", "code": code, "message": message, **detail}


async def answer(gw: Gateway, text: str, handlers: Handlers) -> Reply:
    try:
        message = orjson.loads(text)
    except orjson.JSONDecodeError:
        return ws_error("bad_json", "frames must be JSON objects")
    if not isinstance(message, dict):
        return ws_error("bad_json", "frames must be JSON objects")
    kind = message.get("type")
    if kind == "ping":
        client_time = message.get("client_time_ms")
        if not isinstance(client_time, (int, float)) or isinstance(client_time, bool):
            return ws_error("bad_ping", "ping needs a numeric client_time_ms")
        return {"type": "pong", "client_time_ms": client_time, "server_time_ms": gw.clock()}
    handler = handlers.get(kind) if isinstance(kind, str) else None
    if handler is None:
        return ws_error("unknown_type", "clients may send: " + ", ".join(["ping", *handlers]))
    return await handler(message)
