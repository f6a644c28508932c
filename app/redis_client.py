"""An asyncio Redis client for the configured deployment: standalone (over TLS with a rediss://
URL), or through Sentinel; as an ACL user when one is set.

Its pool holds at most POOL_SIZE connections, and a caller that finds them all busy waits for one
(up to POOL_WAIT_S) instead of failing: 10,000 sockets connecting at once each read a snapshot,
and with a pool that raised when full, the reads past the hundredth failed and tripped the
gateway's Redis breaker (issue #14)."""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff

from app.settings import Settings

POOL_SIZE = 100
POOL_WAIT_S = 5.0  # a burst of reads queues this long at most; then ConnectionError, like Redis down


class BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's pool (asks for the current primary) that waits for a free connection."""


def connect(settings: Settings, timeout_s: float = 1.0) -> redis.Redis:
    """A client that fails fast (callers back off and retry on their own schedule) and, with
    Sentinels configured, asks them for the current primary whenever it reconnects."""
    options: dict[str, Any] = {
        "username": settings.redis_username,
        "password": settings.redis_password,
        "socket_timeout": timeout_s,
        "socket_connect_timeout": timeout_s,
        "retry": Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=2),
        "health_check_interval": 5,
        "decode_responses": True,
        "max_connections": POOL_SIZE,
        "timeout": POOL_WAIT_S,
    }
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.redis_sentinels), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        client: redis.Redis = sentinel.master_for(
            settings.redis_sentinel_master, connection_pool_class=BlockingSentinelPool, **options
        )
        return client
    if settings.redis_url.startswith("rediss://"):
        # Certificates and host names are always verified (redis-py's defaults); the CA file is
        # for a private CA.
        options.update(
            ssl_ca_certs=_path(settings.redis_tls_ca_file),
            ssl_certfile=_path(settings.redis_tls_cert_file),
            ssl_keyfile=_path(settings.redis_tls_key_file),
        )
    return redis.Redis.from_pool(redis.BlockingConnectionPool.from_url(settings.redis_url, **options))


def _path(value: object) -> str | None:
    return None if value is None else str(value)
