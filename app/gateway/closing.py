"""Ending a WebSocket connection for good, within a bounded time.

A close frame waits behind whatever the client has not read yet. A client that reads it
answers and the connection ends; one that never reads would keep its socket, the bytes queued
for it (in asyncio and in the kernel) and its place under the per-address cap for as long as
it likes. So once a close has begun, or the handler is done, the client gets a grace period
(AUCTION_TIMER_WS_CLOSE_GRACE_S) to take what is queued; then the gateway resets the
connection (TCP RST: the kernel drops the queue at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import socket
import struct
import termios
from typing import Any

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter

from app.gateway import frames

POLL_S = 0.05
# Linux: ioctl(TIOCOUTQ) on a TCP socket is SIOCOUTQ, the bytes the peer has not acknowledged.
_OUTQ: int | None = getattr(termios, "TIOCOUTQ", None)


def unsent_bytes(transport: asyncio.BaseTransport) -> int:
    """What the peer has not taken yet: asyncio's write buffer plus the kernel's send queue."""
    queued = transport.get_write_buffer_size() if isinstance(transport, asyncio.WriteTransport) else 0
    sock = transport.get_extra_info("socket")
    if sock is not None and _OUTQ is not None:
        with contextlib.suppress(OSError, ValueError):  # already closed: fileno() is -1
            queued += struct.unpack("i", fcntl.ioctl(sock.fileno(), _OUTQ, b"\0\0\0\0"))[0]
    return queued


def reset(transport: asyncio.BaseTransport) -> None:
    """Close at once, discarding what is queued, and tell the peer so with a TCP RST."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()
    else:
        transport.close()


async def let_go(transport: asyncio.BaseTransport, grace_s: float) -> None:
    """The connection is over: give the peer `grace_s` to take what is queued for it, then reset
    it. When this returns the socket is closed (or its close runs next on the loop)."""
    try:
        # Polled: neither asyncio nor the kernel tells when a peer has taken everything.
        for _ in range(math.ceil(grace_s / POLL_S)):
            if not unsent_bytes(transport):
                break
            await asyncio.sleep(POLL_S)
    except asyncio.CancelledError:  # the gateway is stopping: no more grace
        reset(transport)
        release(transport)
        raise
    if unsent_bytes(transport):
        reset(transport)
    else:
        transport.close()
    release(transport)
    await asyncio.sleep(0)  # asyncio closes the socket in a callback it has just scheduled


def release(transport: asyncio.BaseTransport) -> None:
    """Break the reference cycle a closed asyncio socket transport keeps to itself (CPython 3.11:
    its `_read_ready_cb` is a bound method of itself), so that it, its socket and its buffers are
    freed at once rather than left to a full garbage collection. Closed, it reads no more."""
    if transport.is_closing() and getattr(transport, "_read_ready_cb", None) is not None:
        transport._read_ready_cb = None  # type: ignore[attr-defined]


class GatewayWebSocket(web.WebSocketResponse):
    """aiohttp's WebSocket with what it leaves to us.

    A close that cannot hang: aiohttp's close waits until the client has read the close frame
    and answered it (for its internal closes too: 1009, protocol errors), which a client that
    never reads never does. Each close arms a reset after `close_grace_s`.

    Masked client frames only (RFC 6455 5.1; app/gateway/frames.py)."""

    def __init__(self, *, close_grace_s: float, **options: Any) -> None:
        super().__init__(**options)
        self.close_grace_s = close_grace_s
        self._transport: asyncio.BaseTransport | None = None

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter:
        self._transport = request.transport
        return await super().prepare(request)

    async def close(self, *, code: int = 1000, message: bytes = b"", drain: bool = True) -> bool:
        transport = self._transport
        if self.closed or transport is None:
            return await super().close(code=code, message=message, drain=drain)
        deadline = asyncio.get_running_loop().call_later(self.close_grace_s, reset, transport)
        try:
            return await super().close(code=code, message=message, drain=drain)
        finally:
            deadline.cancel()

    def _post_start(self, request: web.BaseRequest, protocol: str | None, writer: Any) -> None:
        handler, transport = request.protocol, request.transport
        assert transport is not None  # prepare() has just written the 101 to it
        early = frames.hold_early_bytes(handler)
        super()._post_start(request, protocol, writer)
        frames.check_masks(handler, transport, early)
