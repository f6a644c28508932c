"""How the Redis projection differs from a set of timer states, in readable lines
(what `replay --verify` prints and what tests wait on). An auction Redis refuses to read is a
difference like any other."""

from __future__ import annotations

from typing import Any

from redis.exceptions import ResponseError

from projections.refusals import error_code
from projections.store import FIELDS, Projected, ProjectionStore, belongs_in_redis
from streams.clock import wall_ms
from streams.state import TimerState

BATCH = 500


async def redis_differences(store: ProjectionStore, states: dict[str, TimerState]) -> list[str]:
    now = wall_ms()
    wanted = {a: s for a, s in states.items() if belongs_in_redis(s, now, store.ended_ttl_s)}
    out = []
    ids = sorted(wanted)
    for start in range(0, len(ids), BATCH):
        stored = await store.read_many(ids[start : start + BATCH])
        for auction_id, found in stored.items():
            if isinstance(found, ResponseError):
                out.append(f"redis   {auction_id}: unreadable ({error_code(found)}: {str(found)[:200]})")
                continue
            fields, score = found
            expected = Projected.of(wanted[auction_id].public()).fields
            got = {k: fields[k] for k in FIELDS} if fields else None
            if got != dict(expected):
                out.append(f"redis   {auction_id}: {field_diff(got, dict(expected))}")
            in_set = score is not None and int(score) == expected["ends_at_ms"]
            if wanted[auction_id].live != in_set:
                out.append(f"redis   {auction_id}: active set score {score}, expected "
                           f"{expected['ends_at_ms'] if wanted[auction_id].live else 'absent'}")  # fmt: skip
    return out


def field_diff(live: dict[str, Any] | None, replayed: dict[str, Any] | None) -> str:
    if live is None:
        return "missing live, present in the replay"
    if replayed is None:
        return "present live, missing from the replay"
    keys = [k for k in replayed if live.get(k) != replayed.get(k)]
    return ", ".join(f"{k} live={live.get(k)!r} replay={replayed.get(k)!r}" for k in keys)
