"""WS /updates: one socket follows many auctions.

The client sends `{"type":"subscribe","auctions":[...]}` and `{"type":"unsubscribe",...}`.
Each newly followed auction gets its own `snapshot` (state null for an unknown auction),
then that auction's updates, each carrying `auction_id` and the auction's `seq`, framed once
for every socket that follows it. A subscribe is all or nothing: over the per-connection
cap (`too_many_subscriptions`), over the per-connection rate (`rate_limited`, with
`retry_after_ms`) or naming a bad id (`bad_auctions`), nothing of it is applied. An
unsubscribe is answered `unsubscribed`: nothing for those auctions follows it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from app.gateway.context import Gateway
from app.gateway.hub import Connection
from app.gateway.metrics import SUBSCRIPTIONS
from app.gateway.security import RateLimiter, valid_auction_id
from app.gateway.ws import Reply, follow, read_client, upgrade, ws_error

# 500 ids of 64 characters, quoted and separated, fit in 34 KiB.
MAX_FRAME_BYTES = 65536


async def updates_many(request: web.Request) -> web.StreamResponse:
    return await upgrade(request, MAX_FRAME_BYTES, serve)


async def serve(gw: Gateway, conn: Connection, address: str) -> None:
    session = Session(gw, conn, address)
    await read_client(gw, conn, {"subscribe": session.subscribe, "unsubscribe": session.unsubscribe})


@dataclass
class Session:
    gw: Gateway
    conn: Connection
    address: str
    # Per connection, not per address: many viewers may share one address (NAT), and the
    # per-address connection cap already bounds what one address can open.
    limiter: RateLimiter = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.gw.settings.ws_subscribe_rate_per_min)

    def auctions_of(self, message: dict[str, Any]) -> list[str] | None:
        """The message's auction ids, each once, in order; None unless it is a list of 1 to
        WS_MAX_SUBSCRIPTIONS valid ids."""
        ids = message.get("auctions")
        if not isinstance(ids, list) or not 1 <= len(ids) <= self.gw.settings.ws_max_subscriptions:
            return None
        if not all(isinstance(a, str) and valid_auction_id(a) for a in ids):
            return None
        return list(dict.fromkeys(ids))

    def bad_auctions(self) -> dict[str, Any]:
        limit = self.gw.settings.ws_max_subscriptions
        return ws_error("bad_auctions", f"auctions must be a list of 1-{limit} ids, each 1-64 of [A-Za-z0-9_-]")

    async def subscribe(self, message: dict[str, Any]) -> Reply:
        ids = self.auctions_of(message)
        if ids is None:
            SUBSCRIPTIONS.labels("bad_auctions").inc()
            return self.bad_auctions()
        allowed, retry_after_s = self.limiter.allow(self.address)
        if not allowed:
            SUBSCRIPTIONS.labels("rate_limited").inc()
            return ws_error(
                "rate_limited", "too many subscribe messages; nothing of this one was applied",
                retry_after_ms=max(1, round(retry_after_s * 1000)),
            )  # fmt: skip
        new = [a for a in ids if a not in self.conn.subscriptions]
        limit = self.gw.settings.ws_max_subscriptions
        if len(self.conn.subscriptions) + len(new) > limit:
            SUBSCRIPTIONS.labels("too_many_subscriptions").inc()
            return ws_error(
                "too_many_subscriptions", f"a connection may follow {limit} auctions; nothing of this one was applied",
                limit=limit, following=len(self.conn.subscriptions),
            )  # fmt: skip
        SUBSCRIPTIONS.labels("accepted").inc()
        for auction_id in new:
            if self.conn.closing:
                break
            await follow(self.gw, self.conn, auction_id)
        return None  # each auction's snapshot is the answer

    async def unsubscribe(self, message: dict[str, Any]) -> Reply:
        ids = self.auctions_of(message)
        if ids is None:
            return self.bad_auctions()
        for auction_id in ids:
            sub = self.conn.subscriptions.get(auction_id)
            if sub is not None:
                self.gw.hub.unsubscribe(sub)
        return {"type": "unsubscribed", "auctions": ids}
