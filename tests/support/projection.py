"""Comparing the Redis projection with the timer table (read from its changelog), with the same
comparison `replay --verify` uses."""

from __future__ import annotations

import redis.asyncio as aioredis

from projections.keys import Keys
from projections.store import ProjectionStore
from projections.verify import redis_differences
from streams.changelog import read_table
from streams.state import TimerState

ENDED_TTL_S = 3600  # the services' default; every test's ended timers are younger


async def mismatches(client: aioredis.Redis, keys: Keys, table: dict[str, TimerState]) -> list[str]:
    """What differs between Redis and `table` (empty when the projection is whole)."""
    return await redis_differences(ProjectionStore(client, keys, ENDED_TTL_S), table)


async def table_and_mismatches(
    bootstrap: str, app_id: str, client: aioredis.Redis, keys: Keys, prefix_filter: str = ""
) -> tuple[dict[str, TimerState], list[str]]:
    table = {k: v for k, v in (await read_table(bootstrap, app_id)).items() if k.startswith(prefix_filter)}
    return table, await mismatches(client, keys, table)
