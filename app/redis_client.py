"""An asyncio Redis client for the configured deployment: standalone, or through Sentinel."""

from __future__ import annotations

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from app.settings import Settings


def connect(settings: Settings, timeout_s: float = 1.0) -> redis.Redis:
    """A client that fails fast (callers back off and retry on their own schedule) and, with
    Sentinels configured, asks them for the current primary whenever it reconnects."""
    retry = Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2)
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.redis_sentinels), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        client: redis.Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            password=settings.redis_password,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=retry,
            health_check_interval=5,
            decode_responses=True,
        )
        return client
    client = redis.Redis.from_url(
        settings.redis_url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=retry,
        health_check_interval=5,
        decode_responses=True,
    )
    if settings.redis_password:  # overrides a password in the URL
        client.connection_pool.connection_kwargs["password"] = settings.redis_password
    return client
