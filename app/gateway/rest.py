"""REST: timer hydration, client sync, health, readiness, metrics and the countdown page."""

from __future__ import annotations

import uuid
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.gateway.context import GATEWAY, Gateway
from app.gateway.metrics import DRIFT
from app.gateway.security import BAD_AUCTION_ID, client_address, valid_auction_id
from app.gateway.timers import TimerView, Unavailable
from streams import outputs
from streams.effects import Audited, Tracked
from streams.tracing import new_traceparent

NO_STORE = {"Cache-Control": "no-store"}
SOURCE = "urn:auction-timer:gateway"
MAX_INT = 2**53


def error(status: int, code: str, message: str, **headers: str) -> web.Response:
    return web.json_response({"error": code, "message": message}, status=status, headers={**NO_STORE, **headers})


def auction_id_of(request: web.Request) -> str:
    auction_id = request.match_info["auction_id"]
    if not valid_auction_id(auction_id):
        raise web.HTTPBadRequest(reason=BAD_AUCTION_ID)
    return auction_id


async def lookup(gw: Gateway, auction_id: str) -> TimerView:
    try:
        view = await gw.timers.read(auction_id)
    except Unavailable:
        raise web.HTTPServiceUnavailable(
            reason="the projection cannot be read for this auction (Redis is down or refuses it) and this "
            "gateway has not seen it"
        ) from None
    if view is None:
        raise web.HTTPNotFound(reason=f"no timer for auction {auction_id}")
    return view


async def get_timer(request: web.Request) -> web.Response:
    gw = request.app[GATEWAY]
    view = await lookup(gw, auction_id_of(request))
    return web.json_response(gw.timers.present(view, gw.tick_interval_ms), headers=NO_STORE)


def _int_field(body: dict[str, Any], name: str, low: int, high: int) -> int:
    value = body.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise web.HTTPBadRequest(reason=f"{name} must be an integer between {low} and {high}")
    return value


async def json_object(request: web.Request) -> dict[str, Any]:
    """The body as a JSON object, or a 4xx: application/json only, in UTF-8 (JSON's encoding,
    RFC 8259) or without a charset; at most the app's client_max_size (413 past it); parsed
    by orjson, which refuses nesting past 1,024 levels."""
    if request.content_type != "application/json":
        raise web.HTTPUnsupportedMediaType(reason="send the body as Content-Type: application/json")
    if (request.charset or "utf-8").lower() not in ("utf-8", "utf8"):
        raise web.HTTPUnsupportedMediaType(reason="JSON bodies are UTF-8; drop the charset or say utf-8")
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise web.HTTPBadRequest(reason="the body must be a JSON object") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(reason="the body must be a JSON object")
    return body


async def post_sync(request: web.Request) -> web.Response:
    """The client reports what it shows; we answer the truth with our clock and record the drift."""
    gw = request.app[GATEWAY]
    allowed, retry_after = gw.sync_limiter.allow(client_address(request))
    if not allowed:
        return error(
            429, "rate_limited", "too many sync calls; slow down", **{"Retry-After": str(max(1, round(retry_after)))}
        )
    body = await json_object(request)
    auction_id = body.get("auction_id")
    if not isinstance(auction_id, str) or not valid_auction_id(auction_id):
        raise web.HTTPBadRequest(reason=BAD_AUCTION_ID)
    client_remaining = _int_field(body, "client_remaining_ms", 0, MAX_INT)
    client_version = _int_field(body, "version", 0, MAX_INT)
    client_time = _int_field(body, "client_time_ms", 0, MAX_INT)
    view = await lookup(gw, auction_id)
    payload = gw.timers.present(view, gw.tick_interval_ms)
    drift = client_remaining - payload["remaining_ms"]
    reconcile = client_version > payload["version"]
    DRIFT.observe(abs(drift))
    record_resync(gw, payload, drift, client_version, client_time, reconcile)
    payload.update(drift_ms=drift, client_time_ms=client_time, reconcile_requested=reconcile)
    return web.json_response(payload, headers=NO_STORE)


def record_resync(
    gw: Gateway, state: dict[str, Any], drift: int, client_version: int, client_time: int, reconcile: bool
) -> None:
    """An audit entry and Segment's `auction_timer_resynced`, both with the auction's trace id.
    A client that has seen a newer version than the projection holds is recorded as such; the
    gateway sends no Reconcile command for it, because only the worker may write commands (README,
    Security) and the worker's reconciliation repairs the projection every RECONCILE_INTERVAL_S."""
    now = gw.clock()
    auction_id = state["auction_id"]
    traceparent = f"00-{state['trace_id']}-{uuid.uuid4().hex[:16]}-01" if state.get("trace_id") else new_traceparent()
    cause = f"sync-{uuid.uuid4().hex}"
    detail = {"drift_ms": drift, "client_version": client_version, "server_version": state["version"],
              "client_time_ms": client_time, "source": state["source"], "reconcile_requested": reconcile}  # fmt: skip
    gw.outbox.send(
        outputs.audit(
            Audited("client_resynced", auction_id, state["version"], cause, "timer.sync", traceparent, None, detail),
            now,
            SOURCE,
        )
    )
    properties = {"auction_id": auction_id, "trace_id": traceparent[3:35], **detail}
    tracked = Tracked("auction_timer_resynced", auction_id, state["version"], traceparent, properties)
    gw.outbox.send(outputs.analytics(tracked, now))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"}, headers=NO_STORE)


async def readyz(request: web.Request) -> web.Response:
    """Ready while at least one source can answer: the Kafka feed (live: positioned on every
    partition, no error standing) or Redis (a PING, at most a second old)."""
    gw = request.app[GATEWAY]
    body = {"kafka": gw.feed.live, "redis": await gw.redis_probe.up()}
    return web.json_response(body, status=200 if any(body.values()) else 503, headers=NO_STORE)


async def metrics(request: web.Request) -> web.Response:
    return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST, **NO_STORE})


PAGE = resources.files("app").joinpath("static/countdown.html")


async def countdown_page(request: web.Request) -> web.Response:
    auction_id_of(request)
    return web.Response(body=PAGE.read_bytes(), content_type="text/html", headers=NO_STORE)
