"""Reading and writing the Redis projection. Every write is the Lua compare-and-set on
version, pipelined in batches; a stale writer can never overwrite a newer state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any, Literal

import redis.asyncio as redis
from redis.exceptions import NoScriptError, ResponseError

from projections.keys import Keys
from projections.refusals import is_permanent
from streams.state import LIVE, TimerState

Mode = Literal["newer", "repair"]
Stored = tuple[dict[str, Any] | None, float | None]  # a hash (None when missing) and its active-set score
CAS_SCRIPT = resources.files("projections").joinpath("cas.lua").read_text()
CHECK_SCRIPT = resources.files("projections").joinpath("check.lua").read_text()
# A page of the active set after a cursor (score, member), in one atomic step: by rank when the
# cursor's auction is still there at that score, else from that score on.
ACTIVE_PAGE_SCRIPT = """
local rank = redis.call('ZRANK', KEYS[1], ARGV[2])
if rank and tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2])) == tonumber(ARGV[1]) then
  return redis.call('ZRANGE', KEYS[1], rank + 1, rank + tonumber(ARGV[4]), 'WITHSCORES')
end
return redis.call('ZRANGE', KEYS[1], ARGV[1], ARGV[3], 'BYSCORE', 'LIMIT', 0, ARGV[4], 'WITHSCORES')
"""

# The hash's fields, in order; every one is written on every change.
FIELDS = (
    "auction_id",
    "version",
    "status",
    "starts_at_ms",
    "original_ends_at_ms",
    "ends_at_ms",
    "soft_close_window_ms",
    "extension_ms",
    "max_extension_ms",
    "extension_count",
    "extension_total_ms",
    "ended_at_ms",
    "trace_id",
)
INT_FIELDS = (frozenset(FIELDS) | {"updated_at_ms"}) - {"auction_id", "status", "trace_id", "ended_at_ms"}


@dataclass(frozen=True, slots=True)
class Projected:
    """One auction as the projection stores it (the public timer fields)."""

    fields: Mapping[str, Any]

    @property
    def auction_id(self) -> str:
        return str(self.fields["auction_id"])

    @property
    def version(self) -> int:
        return int(self.fields["version"])

    @property
    def ends_at_ms(self) -> int:
        return int(self.fields["ends_at_ms"])

    @property
    def live(self) -> bool:
        return self.fields["status"] in LIVE

    @classmethod
    def of(cls, data: Mapping[str, Any]) -> Projected:
        return cls({name: data.get(name) for name in FIELDS})


Wrong = tuple[Projected, str, dict[str, Any] | None]  # an item, why it is wrong, what Redis holds


@dataclass(frozen=True)
class Checked:
    """What a check found: wrong items, and those Redis refused to check (by auction id)."""

    wrong: list[Wrong] = field(default_factory=list)
    refused: dict[str, ResponseError] = field(default_factory=dict)


def belongs_in_redis(state: TimerState, now_ms: int, ended_ttl_s: int) -> bool:
    """Live timers, and ended ones whose hash has not expired yet."""
    ended = state.ended_at_ms or state.updated_at_ms
    return state.live or now_ms - ended < ended_ttl_s * 1000


def parse_hash(raw: Mapping[Any, Any]) -> dict[str, Any] | None:
    """A stored hash back to typed fields; None when missing or not ours."""
    if not raw or "version" not in raw:
        return None
    out: dict[str, Any] = dict(raw)
    for name in INT_FIELDS & raw.keys():
        out[name] = int(raw[name])
    out["ended_at_ms"] = int(raw["ended_at_ms"]) if raw.get("ended_at_ms") else None
    return out


@dataclass
class ProjectionStore:
    client: redis.Redis
    keys: Keys
    ended_ttl_s: int

    def __post_init__(self) -> None:
        self._cas = self.client.register_script(CAS_SCRIPT)
        self._check = self.client.register_script(CHECK_SCRIPT)
        self._active_page = self.client.register_script(ACTIVE_PAGE_SCRIPT)

    def _args(self, item: Projected, mode: Mode, now_ms: int) -> list[Any]:
        pairs: list[Any] = []
        for name in FIELDS:
            value = item.fields.get(name)
            pairs += [name, "" if value is None else value]
        pairs += ["updated_at_ms", now_ms]
        return [item.version, mode, 1 if item.live else 0, item.ends_at_ms, item.auction_id, self.ended_ttl_s, *pairs]

    async def write(self, items: Sequence[Projected], mode: Mode, now_ms: int) -> list[bool | ResponseError]:
        """CAS each item in one pipeline. Per item: True (applied), False (Redis holds a newer
        version), or the permanent error Redis answered for that item alone (projections/refusals.py).
        A transient error raises: the caller retries. NOSCRIPT (an empty script cache after a
        restart or failover) reloads the script and retries once."""
        if not items:
            return []
        for attempt in (1, 2):
            pipe = self.client.pipeline(transaction=False)
            for item in items:
                await self._cas(
                    keys=[self.keys.timer(item.auction_id), self.keys.active],
                    args=self._args(item, mode, now_ms),
                    client=pipe,
                )
            try:
                results = await pipe.execute(raise_on_error=False)
                return [_applied(result) for result in results]
            except NoScriptError:
                if attempt == 2:
                    raise
                await self.client.script_load(CAS_SCRIPT)
        raise AssertionError("unreachable")

    async def find_wrong(self, items: Sequence[Projected], tolerance_ms: int) -> Checked:
        """The items Redis holds wrongly, why, and what it holds instead (compared in Redis,
        many items a call). When Redis refuses a call for good, the items are split until the
        ones it refuses are found: those are returned apart, the others are checked."""
        if not items:
            return Checked()
        try:
            return Checked(wrong=await self._find_wrong(items, tolerance_ms))
        except ResponseError as exc:
            if not is_permanent(exc):
                raise
            if len(items) == 1:
                return Checked(refused={items[0].auction_id: exc})
        half = len(items) // 2
        first, second = (
            await self.find_wrong(items[:half], tolerance_ms),
            await self.find_wrong(items[half:], tolerance_ms),
        )
        return Checked(first.wrong + second.wrong, {**first.refused, **second.refused})

    async def _find_wrong(self, items: Sequence[Projected], tolerance_ms: int) -> list[Wrong]:
        args: list[Any] = [tolerance_ms]
        for item in items:
            args += [item.auction_id, item.version, item.ends_at_ms, item.fields["status"], 1 if item.live else 0]
        keys = [self.keys.timer(item.auction_id) for item in items] + [self.keys.active]
        wrong = []
        for index, reason, version, ends_at, status in await self._check(keys=keys, args=args):
            old = {"version": int(version), "ends_at_ms": int(ends_at), "status": status} if version else None
            wrong.append((items[int(index) - 1], str(reason), old))
        return wrong

    async def read(self, auction_id: str) -> dict[str, Any] | None:
        return parse_hash(await self.client.hgetall(self.keys.timer(auction_id)))

    async def read_many(self, auction_ids: Iterable[str]) -> dict[str, Stored | ResponseError]:
        """Each auction's hash and its score in the active set, in one round trip; the permanent
        error instead for an auction Redis refuses. A transient error raises."""
        ids = list(auction_ids)
        pipe = self.client.pipeline(transaction=False)
        for auction_id in ids:
            pipe.hgetall(self.keys.timer(auction_id))
            pipe.zscore(self.keys.active, auction_id)
        raw = await pipe.execute(raise_on_error=False)
        out: dict[str, Stored | ResponseError] = {}
        for i, auction_id in enumerate(ids):
            fields, score = raw[2 * i], raw[2 * i + 1]
            refused = next((r for r in (fields, score) if isinstance(r, Exception)), None)
            if refused is None:
                out[auction_id] = (parse_hash(fields), score)
            elif isinstance(refused, ResponseError) and is_permanent(refused):
                out[auction_id] = refused
            else:
                raise refused
        return out

    async def active_page(
        self, after: tuple[int, str] | None, before_ms: int | None, limit: int
    ) -> list[tuple[str, int]]:
        """Up to `limit` (auction_id, ends_at_ms) of the active set in (ends_at_ms, auction_id)
        order, after `after`. When `after`'s auction has left the set or moved, the page starts at
        its ends_at_ms, so auctions ending that same millisecond may come again: the caller
        drops what is not after the cursor. Rows past `before_ms` may follow a cursor."""
        bound = "+inf" if before_ms is None else f"({before_ms}"
        if after is None:
            raw: list[Any] = await self.client.zrange(
                self.keys.active, "-inf", bound, byscore=True, offset=0, num=limit, withscores=True
            )
            return [(str(member), int(score)) for member, score in raw]
        flat: list[Any] = await self._active_page(keys=[self.keys.active], args=[after[0], after[1], bound, limit])
        return [(str(member), int(float(score))) for member, score in zip(flat[::2], flat[1::2], strict=True)]


def _applied(result: Any) -> bool | ResponseError:
    if isinstance(result, ResponseError) and is_permanent(result):
        return result
    if isinstance(result, Exception):
        raise result
    return bool(result[0])
