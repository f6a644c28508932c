"""The gateway's parts, held in one typed application key."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from app.gateway.feed import Feed
from app.gateway.hub import Hub
from app.gateway.last_seen import LastSeen
from app.gateway.outbox import Outbox
from app.gateway.probe import RedisProbe
from app.gateway.security import ConnectionCap, OriginPolicy, RateLimiter
from app.gateway.timers import Timers
from app.settings import Settings


@dataclass
class Gateway:
    settings: Settings
    clock: Callable[[], int]
    hub: Hub
    memory: LastSeen
    timers: Timers
    feed: Feed
    outbox: Outbox
    connections: ConnectionCap
    sync_limiter: RateLimiter
    redis_probe: RedisProbe
    origins: OriginPolicy

    @property
    def tick_interval_ms(self) -> int:
        return int(self.settings.tick_interval_s * 1000)


GATEWAY = web.AppKey("gateway", Gateway)
