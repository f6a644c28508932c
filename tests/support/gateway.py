"""Helpers for gateway tests: settings for an in-process app, seeding the projection,
and WebSocket clients that record what they receive."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from app.settings import Settings
from projections.keys import Keys
from projections.store import Projected, ProjectionStore
from streams.fold import apply
from streams.state import TimerState
from tests.support.events import envelope, now_ms, started


def gateway_settings(bootstrap: str, redis_url: str, key_prefix: str, **extra: Any) -> Settings:
    return Settings.from_env(
        {
            "AUCTION_TIMER_KAFKA_BOOTSTRAP": bootstrap,
            "AUCTION_TIMER_REDIS_URL": redis_url,
            "AUCTION_TIMER_KEY_PREFIX": key_prefix,
            "AUCTION_TIMER_TICK_INTERVAL_S": "1",
        },
        **extra,
    )


def timer(auction_id: str, ends_in_ms: int = 60_000) -> TimerState:
    now = now_ms()
    state, _ = apply(None, envelope(started(auction_id, now, now + ends_in_ms), time_ms=now))
    assert state is not None
    return state


async def seed(redis_url: str, prefix: str, *states: TimerState) -> None:
    """Write states into the projection the way the worker's projection does."""
    import redis.asyncio as aioredis

    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await ProjectionStore(client, Keys(prefix), 3600).write(
            [Projected.of(s.public()) for s in states], "newer", now_ms()
        )
    finally:
        await client.aclose()


@dataclass
class Recorder:
    """A WebSocket client that keeps every message it receives, and when (monotonic s)."""

    ws: aiohttp.ClientWebSocketResponse
    messages: list[dict[str, Any]] = field(default_factory=list)
    arrived: list[float] = field(default_factory=list)
    closed_code: int | None = None
    task: asyncio.Task[None] | None = None

    def start(self) -> Recorder:
        self.task = asyncio.create_task(self._pump())
        return self

    async def _pump(self) -> None:
        async for msg in self.ws:
            if msg.type == aiohttp.WSMsgType.TEXT:
                self.arrived.append(time.monotonic())
                self.messages.append(orjson.loads(msg.data))
        self.closed_code = self.ws.close_code

    def of_type(self, kind: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == kind]

    def of_auction(self, auction_id: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("auction_id") == auction_id]

    async def stop(self) -> None:
        await self.ws.close()
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
