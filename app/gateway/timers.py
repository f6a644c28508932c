"""Answering "what is this auction's timer now": Redis, or the gateway's memory when that
is newer or Redis is down. A failing Redis is skipped for a moment (a small circuit
breaker) so a Redis outage does not add a timeout to every request; Redis refusing one
auction's key for good (projections/refusals.py) is not an outage and leaves it closed."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from app.gateway.last_seen import LastSeen
from app.gateway.metrics import SOURCE
from projections import refusals
from projections.store import ProjectionStore
from streams.state import LIVE

log = logging.getLogger("auction_timer.gateway.timers")
BREAKER_S = 1.0


class Unavailable(Exception):
    """Neither Redis nor memory can answer for this auction right now."""


@dataclass
class TimerView:
    state: dict[str, Any]
    source: str  # "redis" or "memory"
    stale: bool


class Timers:
    def __init__(self, store: ProjectionStore, memory: LastSeen, clock: Callable[[], int]) -> None:
        self.store = store
        self.memory = memory
        self.clock = clock
        self._skip_redis_until = 0.0

    async def read(self, auction_id: str) -> TimerView | None:
        """The newest state we can find; None for an unknown auction; Unavailable when Redis is
        down and memory has nothing."""
        remembered = self.memory.get(auction_id)
        stored: dict[str, Any] | None = None
        redis_failed = False
        if time.monotonic() >= self._skip_redis_until:
            try:
                stored = await self.store.read(auction_id)
            except (RedisError, OSError) as exc:
                redis_failed = True
                if refusals.is_permanent(exc):
                    # Redis refuses this auction's key (a wrong type, an ACL): not an outage, so
                    # the breaker stays closed for every other auction.
                    refusals.report("gateway", auction_id, exc, log)
                else:
                    self._skip_redis_until = time.monotonic() + BREAKER_S
                    log.warning(
                        "redis read failed; serving from memory", extra={"error": f"{type(exc).__name__}: {exc}"}
                    )
        else:
            redis_failed = True
        if stored is not None and (remembered is None or stored["version"] >= remembered["version"]):
            SOURCE.labels("redis").inc()
            return TimerView(stored, "redis", stale=False)
        if remembered is not None:
            SOURCE.labels("memory").inc()
            return TimerView(remembered, "memory", stale=redis_failed)
        if redis_failed:
            raise Unavailable(auction_id)
        return None

    def present(self, view: TimerView, tick_interval_ms: int) -> dict[str, Any]:
        """The public payload of GET /auctions/{id}/timer and of a WebSocket snapshot."""
        now = self.clock()
        state = {k: v for k, v in view.state.items() if k not in ("kind", "cause", "previous_ends_at_ms", "seq")}
        live = state["status"] in LIVE
        state.update(
            remaining_ms=max(0, int(state["ends_at_ms"]) - now) if live else 0,
            server_time_ms=now,
            tick_interval_ms=tick_interval_ms,
            source=view.source,
            stale=view.stale,
        )
        return state
