"""Comparing the Redis projection with the timer table (read from its changelog)."""

from __future__ import annotations

import redis.asyncio as aioredis

from projections.keys import Keys
from projections.store import parse_hash
from streams.changelog import read_table
from streams.state import TimerState


async def mismatches(client: aioredis.Redis, keys: Keys, table: dict[str, TimerState]) -> list[str]:
    """What differs between Redis and `table` (empty when the projection is whole)."""
    pipe = client.pipeline(transaction=False)
    ids = sorted(table)
    for auction_id in ids:
        pipe.hgetall(keys.timer(auction_id))
        pipe.zscore(keys.active, auction_id)
    raw = await pipe.execute()
    problems = []
    for i, auction_id in enumerate(ids):
        state, stored, score = table[auction_id], parse_hash(raw[2 * i]), raw[2 * i + 1]
        if stored is None:
            problems.append(f"{auction_id}: missing")
        elif (stored["version"], stored["ends_at_ms"], stored["status"]) != (
            state.version,
            state.ends_at_ms,
            state.status,
        ):
            problems.append(f"{auction_id}: redis v{stored['version']} {stored['ends_at_ms']} {stored['status']} "
                            f"!= table v{state.version} {state.ends_at_ms} {state.status}")  # fmt: skip
        elif state.live != (score == state.ends_at_ms):
            problems.append(f"{auction_id}: active set score {score} for {state.status}")
    return problems


async def table_and_mismatches(bootstrap: str, app_id: str, client: aioredis.Redis, keys: Keys,
                               prefix_filter: str = "") -> tuple[dict[str, TimerState], list[str]]:  # fmt: skip
    table = {k: v for k, v in (await read_table(bootstrap, app_id)).items() if k.startswith(prefix_filter)}
    return table, await mismatches(client, keys, table)
