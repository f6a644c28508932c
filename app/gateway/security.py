"""The gateway's edges: auction id validation (full matches), the Origin allow-list, the
per-address connection cap, and a token-bucket rate limit per client address."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field

from aiohttp import web

from streams.decode import AUCTION_ID

MAX_TRACKED_ADDRESSES = 100_000
BAD_AUCTION_ID = "auction_id must be 1-64 of [A-Za-z0-9_-]"


def valid_auction_id(value: str) -> bool:
    return AUCTION_ID.fullmatch(value) is not None


def client_address(request: web.Request) -> str:
    """The peer address. Forwarded headers are not trusted: set them up at your proxy."""
    return request.remote or "unknown"


LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


def own_origins(host: str, port: int) -> frozenset[str]:
    """The origins of the gateway's own pages, from its configured address (never from the
    request's Host header, which a DNS-rebinding page controls). A loopback address is reached
    as 127.0.0.1, localhost or [::1]; a wildcard bind (0.0.0.0, ::) has no origin of its own:
    list the public one in AUCTION_TIMER_ALLOWED_ORIGINS."""
    hosts = LOOPBACK_HOSTS if host in LOOPBACK_HOSTS else (host,) if host not in ("", "0.0.0.0", "::") else ()
    suffix = "" if port == 80 else f":{port}"
    return frozenset(f"http://{f'[{h}]' if ':' in h else h}{suffix}" for h in hosts)


@dataclass(frozen=True)
class OriginPolicy:
    """Which Origins may open a WebSocket: an explicit list. Browsers always send Origin on a
    WebSocket upgrade; non-browser clients may leave it out, and are let in (they could send any
    Origin they like anyway). A page whose Origin merely equals the Host it asked for is not
    enough: a DNS-rebinding page has exactly that."""

    allowed: frozenset[str]

    def allows(self, origin: str | None) -> bool:
        return origin is None or origin.lower() in self.allowed


@dataclass
class ConnectionCap:
    per_address: int
    open: dict[str, int] = field(default_factory=dict)

    def acquire(self, address: str) -> bool:
        if self.open.get(address, 0) >= self.per_address:
            return False
        self.open[address] = self.open.get(address, 0) + 1
        return True

    def release(self, address: str) -> None:
        left = self.open.get(address, 0) - 1
        if left > 0:
            self.open[address] = left
        else:
            self.open.pop(address, None)


@dataclass
class RateLimiter:
    """`per_minute` calls per address, refilled continuously; least recently seen addresses are
    forgotten past MAX_TRACKED_ADDRESSES so the table stays bounded."""

    per_minute: int
    buckets: OrderedDict[str, tuple[float, float]] = field(default_factory=OrderedDict)

    def allow(self, address: str, now: float | None = None) -> tuple[bool, float]:
        """(allowed, seconds until the next call would be allowed)."""
        now = time.monotonic() if now is None else now
        tokens, last = self.buckets.pop(address, (float(self.per_minute), now))
        tokens = min(float(self.per_minute), tokens + (now - last) * self.per_minute / 60)
        allowed = tokens >= 1
        if allowed:
            tokens -= 1
        self.buckets[address] = (tokens, now)
        while len(self.buckets) > MAX_TRACKED_ADDRESSES:
            self.buckets.popitem(last=False)
        return allowed, 0.0 if allowed else (1 - tokens) * 60 / self.per_minute
