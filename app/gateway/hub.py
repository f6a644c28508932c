"""Fan-out: per-auction channels of subscribers, each message encoded once for all of them.

A message is serialised and framed as a WebSocket text frame once, and the same bytes are
written to every subscriber's transport: no per-socket task, copy or encoding. A socket may
follow one auction (`/auctions/{id}/updates`) or many (`/updates`); either way it is one
Connection with one Subscriber per auction. A connection whose unsent bytes exceed
`ws_send_queue` messages plus one per auction it follows (a whole round of ticks) is a slow
consumer: it is closed with SLOW_CONSUMER_CLOSE instead of letting memory grow, and
reconnects and rehydrates. If it does not read its close frame either, the connection is reset
after AUCTION_TIMER_WS_CLOSE_GRACE_S. Until its snapshot is out, a new subscriber's messages wait in a
list bounded by `ws_send_queue`.

Channels are kept in the order they last sent something (oldest first), so the ticker finds
the auctions that have been quiet for a tick interval at the front, without a scan. The ticker
publishes a round of ticks as one batch: a socket following many of those auctions gets them
in one write.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
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


@dataclass(eq=False, slots=True)  # slots: no __dict__ per socket for the garbage collector to walk
class Connection:
    """One WebSocket, and the auctions it follows."""

    ws: web.WebSocketResponse
    transport: asyncio.Transport
    queue_size: int
    subscriptions: dict[str, Subscriber] = field(default_factory=dict)
    dropped: bool = False
    heard_at: float = field(default_factory=time.monotonic)  # the client's last frame (app/gateway/heartbeat.py)
    pinged_at: float | None = None  # our last heartbeat PING
    held: list[bytes] | None = None  # its frames of the hub's current batch

    @property
    def closing(self) -> bool:
        return self.transport.is_closing() or self.ws.closed

    def write(self, frame: bytes, batch: list[Connection] | None = None) -> bool:
        """Send a frame; False for a slow consumer (its unsent bytes are over its allowance). In
        one of the hub's batches, a socket that follows several auctions holds its frames, to
        send them together when the batch ends; one that follows one auction gets at most one
        frame a batch, and gets it at once. The fan-out's inner loop: one call per socket per
        message."""
        transport = self.transport
        if transport.is_closing() or self.ws.closed:
            return True  # on its way out; the handler detaches it
        following = len(self.subscriptions)
        if transport.get_write_buffer_size() > (self.queue_size + following) * len(frame):
            return False
        if batch is None or following == 1:
            transport.write(frame)
        elif self.held is None:
            self.held = [frame]
            batch.append(self)
        else:
            self.held.append(frame)
        return True

    def flush(self) -> None:
        """The hub's batch is over: write what it held for this socket, all at once."""
        held, self.held = self.held, None
        if held and not self.closing:
            self.transport.write(b"".join(held))


@dataclass(eq=False, slots=True)
class Subscriber:
    """One auction followed by one connection."""

    conn: Connection
    auction_id: str
    ready: bool = False  # the snapshot is out; frames go straight to the socket
    pending: list[tuple[int, bytes]] = field(default_factory=list)

    def offer(self, seq: int, frame: bytes, batch: list[Connection] | None = None) -> bool:
        """Send (or, before the snapshot, keep) a frame; False for a slow consumer."""
        if self.ready:
            return self.conn.write(frame, batch)
        if self.conn.closing:
            return True  # on its way out; the handler detaches it
        self.pending.append((seq, frame))
        return len(self.pending) <= self.conn.queue_size

    def start(self, after_seq: int) -> None:
        """The snapshot (covering every message up to `after_seq`) is out: send the rest."""
        if not self.conn.closing:
            for seq, frame in self.pending:
                if seq > after_seq:
                    self.conn.transport.write(frame)
        self.pending = []
        self.ready = True


@dataclass
class Channel:
    seq: int = 0
    sent_at: float = field(default_factory=time.monotonic)  # the last message out (monotonic s)
    version: int = 0  # the newest state sent
    server_time_ms: int = 0  # the newest server time sent
    subscribers: set[Subscriber] = field(default_factory=set)

    def stale(self, message: dict[str, Any]) -> bool:
        """A tick of the state already sent, stamped before the channel's last message: the
        worker's periodic tick arriving just after the gateway ticked for it. It says nothing
        new, and would put the subscribers' server time back."""
        return (
            message.get("type") == "tick"
            and message.get("version") == self.version
            and int(message.get("server_time_ms") or 0) < self.server_time_ms
        )


@dataclass
class Hub:
    clock: Callable[[], int]
    channels: OrderedDict[str, Channel] = field(default_factory=OrderedDict)  # least recently sent first
    connections: set[Connection] = field(default_factory=set)
    held: list[Connection] | None = field(default=None, init=False)  # sockets holding frames of the batch

    @contextlib.contextmanager
    def batch(self) -> Iterator[None]:
        """Publish several messages as one round: a socket that follows several of their auctions
        gets all its frames of the round in one write when it ends (one system call for a
        catalogue socket's hundred ticks, not a hundred). Nothing inside may await: no other
        write can come between."""
        if self.held is not None:
            yield
            return
        self.held = []
        try:
            yield
        finally:
            held, self.held = self.held, None
            for conn in held:
                conn.flush()

    def attach(self, conn: Connection) -> None:
        self.connections.add(conn)

    def detach(self, conn: Connection) -> None:
        self.connections.discard(conn)
        for sub in list(conn.subscriptions.values()):
            self.unsubscribe(sub)

    def subscribe(self, conn: Connection, auction_id: str) -> tuple[Subscriber, Channel]:
        sub = Subscriber(conn, auction_id)
        conn.subscriptions[auction_id] = sub
        channel = self.channels.get(auction_id)
        if channel is None:
            channel = self.channels[auction_id] = Channel()  # appended last: it just "sent" (nothing)
        channel.subscribers.add(sub)
        return sub, channel

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub.conn.subscriptions.get(sub.auction_id) is sub:
            del sub.conn.subscriptions[sub.auction_id]
        channel = self.channels.get(sub.auction_id)
        if channel is not None:
            channel.subscribers.discard(sub)
            if not channel.subscribers:
                del self.channels[sub.auction_id]

    def publish(self, auction_id: str, message: dict[str, Any]) -> int:
        """Number the message for its channel, frame it once and send it to every subscriber
        (unless it is a stale tick). Returns how many subscribers got it."""
        channel = self.channels.get(auction_id)
        if channel is None or channel.stale(message):
            return 0
        channel.seq += 1
        self.rest(auction_id, channel)
        channel.version = max(channel.version, int(message.get("version") or 0))
        channel.server_time_ms = max(channel.server_time_ms, int(message.get("server_time_ms") or 0))
        message["seq"] = channel.seq
        frame = text_frame(orjson.dumps(message))
        delivered, seq, slow = 0, channel.seq, []
        for sub in channel.subscribers:  # dropping a slow one changes the set: after the loop
            if sub.offer(seq, frame, self.held):
                delivered += 1
            else:
                slow.append(sub.conn)
        for conn in slow:
            self.drop_slow(conn)
        server_time = int(message.get("server_time_ms") or 0)
        if server_time and delivered:
            FANOUT_LATENCY.observe(max(0, self.clock() - server_time))
        return delivered

    def rest(self, auction_id: str, channel: Channel) -> None:
        """The channel counts as having just sent: it moves to the back of the ticker's queue."""
        channel.sent_at = time.monotonic()
        self.channels.move_to_end(auction_id)

    def quiet_since(self, cutoff: float) -> list[tuple[str, Channel]]:
        """The channels that have sent nothing since `cutoff` (monotonic s), quietest first."""
        quiet = []
        for auction_id, channel in self.channels.items():
            if channel.sent_at > cutoff:
                break
            quiet.append((auction_id, channel))
        return quiet

    def next_quiet_at(self) -> float | None:
        """When the quietest channel last sent (monotonic s); None without channels."""
        for channel in self.channels.values():
            return channel.sent_at
        return None

    def broadcast(self, message: dict[str, Any]) -> None:
        """A message for every socket (feed status); not part of any auction's sequence."""
        frame = text_frame(orjson.dumps(message))
        for conn in list(self.connections):
            if not conn.write(frame):
                self.drop_slow(conn)

    def drop_slow(self, conn: Connection) -> None:
        if conn.dropped:
            return
        conn.dropped = True
        SLOW_CLOSES.inc()
        log.warning("closing a slow consumer", extra={"auctions": sorted(conn.subscriptions)[:10]})
        self.detach(conn)
        # No drain: the close frame waits behind what the client has not read, and its handler
        # gives it the close grace to read that before the connection is reset (app/gateway/closing.py).
        task = asyncio.get_running_loop().create_task(
            conn.ws.close(code=SLOW_CONSUMER_CLOSE, message=b"slow consumer: reconnect and rehydrate", drain=False)
        )
        task.add_done_callback(_ignore_result)

    async def close_all(self) -> None:
        """On shutdown: tell every client we are going away, so it reconnects elsewhere."""
        for conn in list(self.connections):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=GOING_AWAY, message=b"gateway shutting down"), 2)


def _ignore_result(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()
