"""Assembling and running the gateway application."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources

from aiohttp import web

from app.gateway import catalogue, mux, rest, ws
from app.gateway.collector import Collector
from app.gateway.context import GATEWAY, Gateway
from app.gateway.feed import Feed
from app.gateway.heartbeat import Heartbeat
from app.gateway.hub import Hub
from app.gateway.last_seen import LastSeen
from app.gateway.metrics import LOOP_LAG, REQUESTS
from app.gateway.outbox import Outbox
from app.gateway.probe import RedisProbe
from app.gateway.security import LOOPBACK_HOSTS, ConnectionCap, OriginPolicy, RateLimiter, own_origins
from app.gateway.ticker import Ticker
from app.gateway.timers import Timers
from app.redis_client import connect
from app.settings import Settings
from projections.keys import Keys
from projections.store import ProjectionStore
from streams.clock import wall_ms

log = logging.getLogger("auction_timer.gateway")
MAX_BODY_BYTES = 4096
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'self'; connect-src 'self' ws: wss:; img-src 'self' data:; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'",
}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def edges(request: web.Request, handler: Handler) -> web.StreamResponse:
    """JSON error bodies for every HTTP error, security headers, and request counts."""
    route = request.match_info.route.resource.canonical if request.match_info.route.resource else "unmatched"
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        code = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large",
                415: "unsupported_media_type", 503: "unavailable"}.get(exc.status, "error")  # fmt: skip
        kept = {k: v for k, v in exc.headers.items() if k in ("Allow", "Retry-After")}
        response = rest.error(exc.status, code, exc.reason, **kept)
    except ConnectionResetError:
        raise  # the client left; there is nobody to answer
    except Exception:
        # A bug, not the request's fault: a JSON answer all the same, and the traceback logged.
        log.exception("unhandled error answering a request", extra={"route": route})
        response = rest.error(500, "internal_error", "the gateway failed on this request; it is logged")
    if not response.prepared:
        response.headers.update(SECURITY_HEADERS)
    REQUESTS.labels(route, str(response.status)).inc()
    return response


def build_gateway_app(settings: Settings) -> web.Application:
    clock = wall_ms
    hub = Hub(clock)
    memory = LastSeen(settings.ended_ttl_s)
    redis_client = connect(settings)
    store = ProjectionStore(redis_client, Keys(settings.key_prefix), settings.ended_ttl_s)
    kafka_options = settings.kafka_client_options()
    gateway = Gateway(
        settings=settings,
        clock=clock,
        hub=hub,
        memory=memory,
        timers=Timers(store, memory, clock),
        feed=Feed(settings.kafka_bootstrap, hub, memory, clock, settings.max_event_bytes, **kafka_options),
        outbox=Outbox(settings.kafka_bootstrap, **kafka_options),
        connections=ConnectionCap(settings.ws_max_per_address),
        sync_limiter=RateLimiter(settings.sync_rate_per_min),
        redis_probe=RedisProbe(redis_client),
        origins=OriginPolicy(
            frozenset(settings.allowed_origins) | own_origins(settings.gateway_host, settings.gateway_port)
        ),
    )
    app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[edges])
    app[GATEWAY] = gateway
    app.router.add_get("/auctions/{auction_id}/timer", rest.get_timer)
    app.router.add_post("/timers/sync", rest.post_sync)
    app.router.add_get("/auctions/{auction_id}/updates", ws.updates)
    app.router.add_get("/updates", mux.updates_many)
    app.router.add_get("/auctions", catalogue.list_auctions)
    app.router.add_get("/", catalogue.catalogue_page)
    app.router.add_get("/auctions/{auction_id}", rest.countdown_page)
    app.router.add_get("/healthz", rest.healthz)
    app.router.add_get("/readyz", rest.readyz)
    if settings.gateway_metrics_port:
        app.cleanup_ctx.append(metrics_listener)
    else:
        app.router.add_get("/metrics", rest.metrics)
        if settings.gateway_host not in LOOPBACK_HOSTS:
            log.warning(
                "/metrics is served on the gateway's public address; set AUCTION_TIMER_GATEWAY_METRICS_PORT to "
                "serve it on an internal one",
                extra={"gateway_host": settings.gateway_host},
            )
    app.router.add_static("/static", str(resources.files("app").joinpath("static")), show_index=False)
    app.cleanup_ctx.append(background)
    app.on_shutdown.append(lambda app: app[GATEWAY].hub.close_all())
    return app


async def background(app: web.Application) -> AsyncIterator[None]:
    """The feed, the ticker, the heartbeat, the loop-lag probe, memory pruning, the Redis probe and
    the garbage collector's schedule run for the app's lifetime."""
    gw = app[GATEWAY]
    collector = Collector()
    collector.start()
    tasks = [
        asyncio.create_task(gw.feed.run(), name="feed"),
        asyncio.create_task(Ticker(gw.hub, gw.memory, gw.settings.tick_interval_s).run(), name="ticker"),
        asyncio.create_task(collector.run(), name="collector"),
        asyncio.create_task(Heartbeat(gw.hub, gw.settings.ws_heartbeat_s).run(), name="heartbeat"),
        asyncio.create_task(watch_loop_lag(), name="loop-lag"),
        asyncio.create_task(prune(gw), name="prune"),
        asyncio.create_task(gw.redis_probe.run(), name="redis-probe"),
    ]
    yield
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await gw.outbox.close()
    await gw.timers.store.client.aclose()
    collector.stop()


async def metrics_listener(app: web.Application) -> AsyncIterator[None]:
    """/metrics alone on AUCTION_TIMER_GATEWAY_METRICS_HOST:PORT, for the app's lifetime."""
    settings = app[GATEWAY].settings
    metrics_app = web.Application(middlewares=[edges])
    metrics_app.router.add_get("/metrics", rest.metrics)
    runner = web.AppRunner(metrics_app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.gateway_metrics_host, settings.gateway_metrics_port).start()
    yield
    await runner.cleanup()


async def watch_loop_lag(interval_s: float = 0.1) -> None:
    loop = asyncio.get_running_loop()
    while True:
        start = loop.time()
        await asyncio.sleep(interval_s)
        LOOP_LAG.observe(max(0.0, (loop.time() - start - interval_s) * 1000))


async def prune(gw: Gateway) -> None:
    while True:
        await asyncio.sleep(60)
        gw.memory.prune()


def run(settings: Settings) -> None:
    web.run_app(
        build_gateway_app(settings),
        host=settings.gateway_host,
        port=settings.gateway_port,
        access_log=None,
        print=lambda text: log.info(text.strip()),
        shutdown_timeout=5,
        reuse_port=settings.gateway_reuse_port or None,
    )
