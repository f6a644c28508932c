"""Fan-out: per-auction channels of subscribers, each message encoded once for all of them.

A message is serialised and framed as a WebSocket text frame once, and the same bytes are
written to every subscriber's transport: no per-socket task, copy or encoding. A socket
whose unsent bytes exceed `ws_send_queue` messages is a slow consumer: it is closed with
SLOW_CONSUMER_CLOSE instead of letting memory grow, and reconnects and rehydrates. If it does
not read its close frame either, the connection is reset after AUCTION_TIMER_WS_CLOSE_GRACE_S.
Until its snapshot is out, a new subscriber's messages wait in a list bounded the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

from app.gateway.metrics import FANOUT_LATENCY, SLOW_CLOSES

log = logging.getLogger("auction_timer.gateway.hub")

SLOW_CONSUMER_CLOSE = 4008  # documented in docs/asyncapi.yaml
GOING_AWAY = 1001


def encode(message: dict[str, Any]) -> str:
    return orjson.dumps(message).decode()


def text_frame(payload: bytes) -> bytes:
    """An unmasked, final WebSocket text frame (RFC 6455 5.2), as a server sends it."""
    size = len(payload)
    if size < 126:
        header = struct.pack("!BB", 0x81, size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x81, 126, size)
    else:
        header = struct.pack("!BBQ", 0x81, 127, size)
    return header + payload


@dataclass(eq=False)
class Subscriber:
    ws: web.WebSocketResponse
    transport: asyncio.Transport
    auction_id: str
    queue_size: int
    ready: bool = False  # the snapshot is out; frames go straight to the socket
    dropped: bool = False
    pending: list[tuple[int, bytes]] = field(default_factory=list)

    def offer(self, seq: int, frame: bytes) -> bool:
        """Send (or, before the snapshot, keep) a frame; False for a slow consumer."""
        if self.ws.closed or self.transport.is_closing():
            return True  # on its way out; the handler unsubscribes it
        if not self.ready:
            self.pending.append((seq, frame))
            return len(self.pending) <= self.queue_size
        if self.transport.get_write_buffer_size() > self.queue_size * len(frame):
            return False
        self.transport.write(frame)
        return True

    def start(self, after_seq: int) -> None:
        """The snapshot (covering every message up to `after_seq`) is out: send the rest."""
        for seq, frame in self.pending:
            if not seq or seq > after_seq:
                self.transport.write(frame)
        self.pending.clear()
        self.ready = True


@dataclass
class Channel:
    seq: int = 0
    subscribers: set[Subscriber] = field(default_factory=set)


@dataclass
class Hub:
    clock: Callable[[], int]
    channels: dict[str, Channel] = field(default_factory=dict)
    everyone: set[Subscriber] = field(default_factory=set)

    def subscribe(self, sub: Subscriber) -> Channel:
        channel = self.channels.setdefault(sub.auction_id, Channel())
        channel.subscribers.add(sub)
        self.everyone.add(sub)
        return channel

    def unsubscribe(self, sub: Subscriber) -> None:
        self.everyone.discard(sub)
        channel = self.channels.get(sub.auction_id)
        if channel is not None:
            channel.subscribers.discard(sub)
            if not channel.subscribers:
                del self.channels[sub.auction_id]

    def publish(self, auction_id: str, message: dict[str, Any]) -> int:
        """Number the message for its channel, frame it once and send it to every subscriber.
        Returns how many subscribers got it."""
        channel = self.channels.get(auction_id)
        if channel is None:
            return 0
        channel.seq += 1
        message["seq"] = channel.seq
        frame = text_frame(orjson.dumps(message))
        delivered = 0
        for sub in list(channel.subscribers):
            if sub.offer(channel.seq, frame):
                delivered += 1
            else:
                self.drop_slow(sub)
        server_time = int(message.get("server_time_ms") or 0)
        if server_time and delivered:
            FANOUT_LATENCY.observe(max(0, self.clock() - server_time))
        return delivered

    def broadcast(self, message: dict[str, Any]) -> None:
        """A message for every socket (feed status); not part of any auction's sequence."""
        frame = text_frame(orjson.dumps(message))
        for sub in list(self.everyone):
            if not sub.offer(0, frame):
                self.drop_slow(sub)

    def drop_slow(self, sub: Subscriber) -> None:
        if sub.dropped:
            return
        sub.dropped = True
        SLOW_CLOSES.inc()
        self.unsubscribe(sub)
        log.warning("closing a slow consumer", extra={"auction_id": sub.auction_id})
        # No drain: the close frame waits behind what the client has not read, and its handler
        # gives it the close grace to read that before the connection is reset (app/gateway/closing.py).
        task = asyncio.get_running_loop().create_task(
            sub.ws.close(code=SLOW_CONSUMER_CLOSE, message=b"slow consumer: reconnect and rehydrate", drain=False)
        )
        task.add_done_callback(_ignore_result)

    async def close_all(self) -> None:
        """On shutdown: tell every client we are going away, so it reconnects elsewhere."""
        for sub in list(self.everyone):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sub.ws.close(code=GOING_AWAY, message=b"gateway shutting down"), 2)


def _ignore_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
