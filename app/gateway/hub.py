"""Fan-out: per-auction channels of subscribers, each message encoded once for all of them.

Every subscriber has a bounded queue drained by its own writer. A socket that falls
`ws_send_queue` messages behind is closed with SLOW_CONSUMER_CLOSE instead of letting
memory grow; it reconnects and rehydrates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
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


@dataclass(eq=False)
class Subscriber:
    ws: web.WebSocketResponse
    auction_id: str
    queue_size: int
    clock: Callable[[], int]
    queue: asyncio.Queue[tuple[int, int, str]] = field(init=False)
    dropped: bool = False

    def __post_init__(self) -> None:
        self.queue = asyncio.Queue(self.queue_size)

    def offer(self, seq: int, server_time_ms: int, text: str) -> bool:
        """Queue a message; False when the queue is full (a slow consumer)."""
        try:
            self.queue.put_nowait((seq, server_time_ms, text))
            return True
        except asyncio.QueueFull:
            return False

    async def write(self, after_seq: int) -> None:
        """Send queued messages in order, skipping those the snapshot already covered."""
        while True:
            seq, server_time_ms, text = await self.queue.get()
            if seq and seq <= after_seq:
                continue
            await self.ws.send_str(text)
            if server_time_ms:
                FANOUT_LATENCY.observe(max(0, self.clock() - server_time_ms))


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
        """Number the message for its channel, encode it once and queue it for every subscriber.
        Returns how many subscribers got it."""
        channel = self.channels.get(auction_id)
        if channel is None:
            return 0
        channel.seq += 1
        message["seq"] = channel.seq
        text = encode(message)
        server_time = int(message.get("server_time_ms") or 0)
        delivered = 0
        for sub in list(channel.subscribers):
            if sub.offer(channel.seq, server_time, text):
                delivered += 1
            else:
                self.drop_slow(sub)
        return delivered

    def broadcast(self, message: dict[str, Any]) -> None:
        """A message for every socket (feed status); not part of any auction's sequence."""
        text = encode(message)
        for sub in list(self.everyone):
            if not sub.offer(0, 0, text):
                self.drop_slow(sub)

    def drop_slow(self, sub: Subscriber) -> None:
        if sub.dropped:
            return
        sub.dropped = True
        SLOW_CLOSES.inc()
        self.unsubscribe(sub)
        log.warning("closing a slow consumer", extra={"auction_id": sub.auction_id})
        task = asyncio.get_running_loop().create_task(
            sub.ws.close(code=SLOW_CONSUMER_CLOSE, message=b"slow consumer: reconnect and rehydrate")
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
