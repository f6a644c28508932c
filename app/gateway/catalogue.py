"""GET /auctions: the running auctions, ending soonest first, a page at a time, from the Redis
active set; and GET /, the catalogue page that shows them.

The cursor names the last auction a page scanned (`{ends_at_ms}.{auction_id}`); the next page
starts after it in (ends_at_ms, auction_id) order, so auctions that end or are added between
pages do not shift the others. A page may hold fewer than `limit` auctions (scheduled ones
are skipped); the listing is done when `next_cursor` is null.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from aiohttp import web
from redis.exceptions import RedisError, ResponseError

from app.gateway.context import GATEWAY
from app.gateway.rest import NO_STORE
from projections.store import FIELDS

MAX_LIMIT = 500
DEFAULT_LIMIT = 100
MAX_MS = 2**53
CURSOR = re.compile(r"(\d{1,16})\.([A-Za-z0-9_-]{1,64})")
LIMIT = re.compile(r"[1-9]\d{0,2}")
INSTANT = re.compile(r"\d{1,16}")
PAGE = resources.files("app").joinpath("static/catalogue.html")


def query(request: web.Request) -> tuple[tuple[int, str] | None, int | None, int]:
    """(cursor, ending_before_ms, limit) from the query string; 400 on anything malformed."""
    q = request.query
    if q.get("status", "running") != "running":
        raise web.HTTPBadRequest(reason="status must be running (the only status listed)")
    raw_limit = q.get("limit", str(DEFAULT_LIMIT))
    if not LIMIT.fullmatch(raw_limit) or int(raw_limit) > MAX_LIMIT:
        raise web.HTTPBadRequest(reason=f"limit must be an integer from 1 to {MAX_LIMIT}")
    before: int | None = None
    if "ending_before_ms" in q:
        raw = q["ending_before_ms"]
        if not INSTANT.fullmatch(raw) or int(raw) > MAX_MS:
            raise web.HTTPBadRequest(reason=f"ending_before_ms must be an integer from 0 to {MAX_MS}")
        before = int(raw)
    cursor: tuple[int, str] | None = None
    if "cursor" in q:
        match = CURSOR.fullmatch(q["cursor"])
        if match is None:
            raise web.HTTPBadRequest(reason="cursor must be a next_cursor this API returned")
        cursor = (int(match[1]), match[2])
    return cursor, before, int(raw_limit)


async def list_auctions(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    cursor, before, limit = query(request)
    store = gw.timers.store
    try:
        scanned = await store.active_page(cursor, before, limit)
        rows = [(a, e) for a, e in scanned if (cursor is None or (e, a) > cursor) and (before is None or e < before)]
        states = await store.read_many(a for a, _ in rows) if rows else {}
    except (RedisError, OSError):
        raise web.HTTPServiceUnavailable(reason="the projection is unreachable; try again shortly") from None
    now = gw.clock()
    auctions = []
    for auction_id, _ in rows:
        stored = states[auction_id]
        state = None if isinstance(stored, ResponseError) else stored[0]  # one Redis refuses is left out
        if state is not None and state["status"] == "running":
            item: dict[str, Any] = {name: state.get(name) for name in FIELDS}
            item["remaining_ms"] = max(0, int(state["ends_at_ms"]) - now)
            auctions.append(item)
    last_id, last_ends = scanned[-1] if scanned else ("", 0)
    more = len(scanned) == limit and (before is None or last_ends < before)
    body = {
        "auctions": auctions,
        "next_cursor": f"{last_ends}.{last_id}" if more else None,
        "server_time_ms": now,
        "tick_interval_ms": gw.tick_interval_ms,
    }
    return web.json_response(body, headers=NO_STORE)


async def catalogue_page(request: web.Request) -> web.Response:
    return web.Response(body=PAGE.read_bytes(), content_type="text/html", headers=NO_STORE)
