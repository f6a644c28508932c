"""Does Redis answer? A PING, asked at most once a second however often /readyz is polled;
callers that arrive while one is in flight share it. `run` asks every second, so the
auctions_gateway_redis_up gauge is current whether or not anything polls /readyz."""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as redis
from redis.exceptions import RedisError

from app.gateway.metrics import REDIS_UP

FRESH_S = 1.0  # an answer is reused this long
TIMEOUT_S = 1.0  # a PING that takes longer counts as no answer


class RedisProbe:
    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._up = False
        self._fresh_until = 0.0
        self._pending: asyncio.Future[bool] | None = None

    async def up(self) -> bool:
        if time.monotonic() < self._fresh_until:
            return self._up
        if self._pending is None:
            self._pending = asyncio.ensure_future(self._ping())
        return await asyncio.shield(self._pending)

    async def _ping(self) -> bool:
        try:
            async with asyncio.timeout(TIMEOUT_S):
                up = bool(await self.client.ping())
        except (RedisError, OSError, TimeoutError):
            up = False
        self._up, self._fresh_until, self._pending = up, time.monotonic() + FRESH_S, None
        REDIS_UP.set(1 if up else 0)
        return up

    async def run(self) -> None:
        while True:
            await self.up()
            await asyncio.sleep(FRESH_S)
