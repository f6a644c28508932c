"""`auction-timer replay`: timelines, a rebuilt projection, or a verification of the live state,
all from the Kafka log alone."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError, ResponseError

from app.redis_client import connect
from app.settings import Settings
from projections.keys import Keys
from projections.refusals import error_code
from projections.store import Projected, ProjectionStore, belongs_in_redis
from projections.verify import field_diff, redis_differences
from streams.changelog import read_changelog, read_table
from streams.clock import wall_ms
from streams.errors import ReplayError
from streams.replay import MemoryStates, Progress, Replayed, Window, committed_offsets, read_inputs, reprocess
from streams.state import TimerState

BATCH = 500


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--from", dest="start", default="earliest", help="earliest (default), an offset, or an ISO time"
    )
    parser.add_argument("--to", dest="end", default="latest", help="latest (default) or an ISO time")
    parser.add_argument("--auction", action="append", help="only this auction (repeatable)")
    parser.add_argument("--timeline", metavar="FILE", help="write one JSON line per state transition; - for stdout")
    parser.add_argument("--rebuild-redis", metavar="URL", help="write the replayed projection into this Redis")
    parser.add_argument("--prefix", default=None, help="key prefix for --rebuild-redis (default: the configured one)")
    parser.add_argument(
        "--verify", action="store_true", help="compare with the live table and Redis; exit 1 on a difference"
    )
    parser.add_argument(
        "--from-changelog",
        action="store_true",
        help="start from the table's changelog and the inputs after the worker's committed offsets (no --from)",
    )


async def run(settings: Settings, args: argparse.Namespace, out: TextIO = sys.stdout) -> int:
    auctions = set(args.auction) if args.auction else None
    window, table = Window(args.start, args.end), None
    options = settings.kafka_client_options()
    if args.from_changelog:
        if args.start != "earliest":
            raise ReplayError("--from-changelog starts where the table's changelog stands; leave out --from")
        timers, markers = await read_changelog(settings.kafka_bootstrap, settings.app_id, **options)
        offsets = await committed_offsets(settings.kafka_bootstrap, settings.app_id, **options)
        window = Window("offsets", args.end, offsets)
        table = MemoryStates({k.encode(): s for k, s in timers.items()}, {k.encode(): m for k, m in markers.items()})
    records, partitions = await read_inputs(settings.kafka_bootstrap, window, auctions, Progress(), **options)
    replayed = reprocess(records, partitions, settings.max_event_bytes, settings.fold_rules(), table)
    print(
        f"replayed {len(records)} events into {len(replayed.states)} auctions, {len(replayed.timeline)} transitions"
        + (f"; rejected {dict(replayed.rejected)}" if replayed.rejected else ""),
        file=sys.stderr,
    )
    if args.timeline:
        write_timeline(replayed, args.timeline, out)
    if args.rebuild_redis:
        prefix = settings.key_prefix if args.prefix is None else args.prefix
        client = aioredis.Redis.from_url(args.rebuild_redis, decode_responses=True)
        try:
            written = await rebuild(ProjectionStore(client, Keys(prefix), settings.ended_ttl_s), replayed.states)
        finally:
            await client.aclose()
        print(f"rebuilt {written} projection entries under prefix {prefix!r}", file=sys.stderr)
    if args.verify:
        differences = await verify(settings, replayed, auctions)
        for line in differences:
            print(line, file=out)
        print(f"verify: {len(differences)} difference(s)", file=sys.stderr)
        return 1 if differences else 0
    return 0


def write_timeline(replayed: Replayed, path: str, out: TextIO) -> None:
    lines = b"".join(orjson.dumps(entry) + b"\n" for entry in replayed.timeline)
    if path == "-":
        out.write(lines.decode())
        out.flush()
    else:
        with open(path, "wb") as handle:
            handle.write(lines)


async def rebuild(store: ProjectionStore, states: dict[str, TimerState]) -> int:
    """Write the replayed projection; returns how many entries were written. An auction Redis
    refuses for good is named on stderr and the others are written."""
    now = wall_ms()
    wanted = [Projected.of(s.public()) for s in states.values() if belongs_in_redis(s, now, store.ended_ttl_s)]
    refused = 0
    for start in range(0, len(wanted), BATCH):
        batch = wanted[start : start + BATCH]
        for item, result in zip(batch, await store.write(batch, "newer", now), strict=True):
            if isinstance(result, ResponseError):
                refused += 1
                print(f"redis refused {item.auction_id}: {error_code(result)}: {str(result)[:200]}", file=sys.stderr)
    return len(wanted) - refused


async def verify(settings: Settings, replayed: Replayed, auctions: set[str] | None) -> list[str]:
    """Readable differences between the replay and (1) the table's changelog, (2) live Redis."""
    table = await read_table(settings.kafka_bootstrap, settings.app_id, **settings.kafka_client_options())
    if auctions is not None:
        table = {a: s for a, s in table.items() if a in auctions}
    out = []
    for auction_id in sorted(set(table) | set(replayed.states)):
        live, again = table.get(auction_id), replayed.states.get(auction_id)
        if live != again:
            out.append(f"table   {auction_id}: {field_diff(as_dict(live), as_dict(again))}")
    client = connect(settings)
    try:
        out += await redis_differences(
            ProjectionStore(client, Keys(settings.key_prefix), settings.ended_ttl_s), replayed.states
        )
    except (RedisError, OSError) as exc:  # an auction Redis refuses is a difference; this is an outage
        raise ReplayError(f"cannot read the projection from Redis: {type(exc).__name__}: {exc}") from None
    finally:
        await client.aclose()
    return out


def as_dict(state: TimerState | None) -> dict[str, Any] | None:
    if state is None:
        return None
    return {k: getattr(state, k) for k in state.__dataclass_fields__}
