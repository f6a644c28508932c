"""An asyncio Redis client for the configured deployment: standalone (over TLS with a rediss://
URL), or through Sentinel; as an ACL user when one is set."""

from __future__ import annotations

from typing import Any

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel
from redis.backoff import ExponentialBackoff

from app.settings import Settings


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
    }
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            list(settings.redis_sentinels), socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        client: redis.Redis = sentinel.master_for(settings.redis_sentinel_master, **options)
        return client
    if settings.redis_url.startswith("rediss://"):
        # Certificates and host names are always verified (redis-py's defaults); the CA file is
        # for a private CA.
        options.update(
            ssl_ca_certs=_path(settings.redis_tls_ca_file),
            ssl_certfile=_path(settings.redis_tls_cert_file),
            ssl_keyfile=_path(settings.redis_tls_key_file),
        )
    return redis.Redis.from_url(settings.redis_url, **options)


def _path(value: object) -> str | None:
    return None if value is None else str(value)
