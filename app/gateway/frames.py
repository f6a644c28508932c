"""RFC 6455 5.1: "a server MUST close the connection upon receiving a frame that is not masked".
aiohttp does not check it, so the bytes a client sends pass this check on their way to
aiohttp's frame parser. It reads frame headers only (2 to 14 bytes a frame) and counts payload
bytes past, so it costs next to nothing. An unmasked frame gets a close frame with 1002
(protocol error) and the connection closes; nothing after it reaches the parser.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Protocol

PROTOCOL_ERROR = 1002


class FrameParser(Protocol):
    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


def close_frame(code: int, reason: bytes) -> bytes:
    """A server's (unmasked) close frame; the reason is cut to fit a control frame (125 bytes)."""
    payload = struct.pack("!H", code) + reason[:123]
    return struct.pack("!BB", 0x88, len(payload)) + payload


def header_size(second_byte: int) -> int:
    """Bytes of a client frame's header, from its second byte (length field, mask bit)."""
    extended = {126: 2, 127: 8}.get(second_byte & 0x7F, 0)
    return 2 + extended + (4 if second_byte & 0x80 else 0)


def payload_size(header: bytes | bytearray) -> int:
    short = header[1] & 0x7F
    if short == 126:
        return int.from_bytes(header[2:4], "big")
    if short == 127:
        return int.from_bytes(header[2:10], "big")
    return short


class MaskedFramesOnly:
    """Wraps aiohttp's parser (what the connection feeds) and lets only masked frames through."""

    def __init__(self, parser: FrameParser, transport: asyncio.BaseTransport) -> None:
        self.parser = parser
        self.transport = transport
        self.header = bytearray()  # the header of the frame being read, so far
        self.payload_left = 0  # payload bytes of that frame not yet seen
        self.refused = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        if self.refused:
            return False, b""
        if not self._all_masked(data):
            self._refuse()
            return False, b""
        return self.parser.feed_data(data)

    def feed_eof(self) -> None:
        self.parser.feed_eof()

    def _all_masked(self, data: bytes) -> bool:
        at, size = 0, len(data)
        while at < size:
            if self.payload_left:
                step = min(self.payload_left, size - at)
                self.payload_left -= step
                at += step
                continue
            self.header.append(data[at])
            at += 1
            if len(self.header) == 2 and not self.header[1] & 0x80:
                return False
            if len(self.header) >= 2 and len(self.header) == header_size(self.header[1]):
                self.payload_left = payload_size(self.header)
                self.header.clear()
        return True

    def _refuse(self) -> None:
        self.refused = True
        if isinstance(self.transport, asyncio.WriteTransport) and not self.transport.is_closing():
            self.transport.write(close_frame(PROTOCOL_ERROR, b"client frames must be masked (RFC 6455 5.1)"))
        self.transport.close()
        self.parser.feed_eof()  # the handler's receive ends


# aiohttp's RequestHandler keeps the parser it feeds, and the bytes a client sent right behind its
# upgrade request, in private slots; tests/e2e/test_gateway_hostile.py pins their use against the
# aiohttp in use.


def hold_early_bytes(handler: Any) -> bytes:
    """Take the bytes the client sent behind its upgrade request, before aiohttp's parser (created
    next) would get them unchecked."""
    early: bytes = handler._message_tail
    handler._message_tail = b""
    return early


def check_masks(handler: Any, transport: asyncio.BaseTransport, early: bytes) -> None:
    """Put the check in front of the parser aiohttp has just created, and pass it the held bytes."""
    check = MaskedFramesOnly(handler._payload_parser, transport)
    handler._payload_parser = check
    if early:
        check.feed_data(early)
