"""A WebSocket client on a bare socket, for what well-behaved clients never do: not reading,
unmasked frames, floods of control frames, exact frame sizes. And the kernel's view of a TCP
connection (/proc/net/tcp), to tell whether the gateway really closed one."""

from __future__ import annotations

import base64
import os
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TEXT, CLOSE, PING, PONG = 0x1, 0x8, 0x9, 0xA
ESTABLISHED, LISTEN = "01", "0A"


@dataclass
class RawSocket:
    sock: socket.socket
    status: int
    received: bytes  # what came after the response headers (frames)

    @property
    def local_port(self) -> int:
        return int(self.sock.getsockname()[1])

    def send_frame(self, opcode: int, payload: bytes, masked: bool = True) -> None:
        self.sock.sendall(frame(opcode, payload, masked))

    def read_until_closed(self, timeout: float = 10.0) -> bytes:
        """Everything the server sends until it closes the connection (EOF or reset)."""
        self.sock.settimeout(timeout)
        data = self.received
        try:
            while chunk := self.sock.recv(1 << 16):
                data += chunk
        except ConnectionResetError:
            pass
        return data

    def read_until(self, wanted: Callable[[list[tuple[int, bytes]]], bool], timeout: float = 10.0) -> bytes:
        """Read until the server frames received so far satisfy `wanted`, or it closes."""
        self.sock.settimeout(timeout)
        data = self.received
        while not wanted(server_frames(data)):
            try:
                chunk = self.sock.recv(1 << 16)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        self.received = data
        return data

    def close(self) -> None:
        self.sock.close()


def upgrade(
    port: int,
    path: str,
    origin: str | None = None,
    rcvbuf: int | None = None,
    extra: bytes = b"",
    host: str | None = None,
) -> RawSocket:
    """Open a WebSocket on 127.0.0.1:`port`, reading only the response headers. `extra` is sent
    in the same write as the request (frames before the 101); `host` is the Host header sent
    (127.0.0.1:`port` unless given)."""
    sock = socket.socket()
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    key = base64.b64encode(os.urandom(16)).decode()
    head = (
        f"GET {path} HTTP/1.1\r\nHost: {host or f'127.0.0.1:{port}'}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
    )
    if origin is not None:
        head += f"Origin: {origin}\r\n"
    sock.sendall((head + "\r\n").encode() + extra)
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    header, _, rest = data.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1]) if header else 0
    return RawSocket(sock, status, rest)


def frame(opcode: int, payload: bytes, masked: bool = True) -> bytes:
    """One final frame as a client sends it (masked, RFC 6455 5.3), or unmasked on purpose."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = struct.pack("!BB", 0x80 | opcode, mask_bit | size)
    elif size < 65536:
        header = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, size)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, size)
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def server_frames(stream: bytes) -> list[tuple[int, bytes]]:
    """(opcode, payload) of each complete unmasked server frame in `stream`."""
    out, at = [], 0
    while at + 2 <= len(stream):
        opcode, length = stream[at] & 0x0F, stream[at + 1] & 0x7F
        at += 2
        if length == 126:
            length = struct.unpack(">H", stream[at : at + 2])[0]
            at += 2
        elif length == 127:
            length = struct.unpack(">Q", stream[at : at + 8])[0]
            at += 8
        if at + length > len(stream):
            break
        out.append((opcode, stream[at : at + length]))
        at += length
    return out


def close_code(frames: list[tuple[int, bytes]]) -> int | None:
    """The code of the first close frame among `frames` (see server_frames)."""
    for opcode, payload in frames:
        if opcode == CLOSE:
            return int(struct.unpack(">H", payload[:2])[0]) if len(payload) >= 2 else None
    return None


def tcp_state(local_port: int, remote_port: int) -> str | None:
    """The kernel's state of the IPv4 connection 127.0.0.1:local_port -> :remote_port
    (hex, "01" is ESTABLISHED), or None when the kernel holds no such socket."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote, state = fields[1], fields[2], fields[3]
        if int(local.split(":")[1], 16) == local_port and int(remote.split(":")[1], 16) == remote_port:
            return state
    return None


def listening_on(port: int) -> list[str]:
    """The addresses the kernel has a listening IPv4 socket on for `port` ("127.0.0.1", "0.0.0.0")."""
    out = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == LISTEN and int(local_port, 16) == port:
            out.append(".".join(str(b) for b in reversed(bytes.fromhex(address))))
    return out
