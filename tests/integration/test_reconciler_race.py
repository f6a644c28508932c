"""The reconciler racing the live projection never writes an older version over a newer one."""

from __future__ import annotations

import asyncio
import random
import sys
from dataclasses import replace
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from infra.ports import free_port
from infra.redis_server import RedisServer
from projections.keys import Keys
from projections.reconciler import Reconciler
from projections.store import Projected, ProjectionStore
from streams.fold import apply
from streams.state import TimerState
from tests.support.events import T0, envelope, started

AUCTIONS = [f"race-{i}" for i in range(40)]
TOP = 25
YIELD = 0
SEED = 20261130  # the reconciler's lag is random, but the same on every run


def versions_of(base: TimerState, version: int) -> TimerState:
    return replace(base, version=version, ends_at_ms=base.original_ends_at_ms + 100 * version)


async def test_reconciler_never_overwrites_newer(redis_server: RedisServer, key_prefix: str) -> None:
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    store = ProjectionStore(client, Keys(key_prefix), ended_ttl_s=60)
    audits: list[object] = []

    async def publish(record: object) -> None:
        audits.append(record)

    copies: dict[str, TimerState] = {}
    reconciler = Reconciler(store, interval_s=3600, sweep_s=3600, publish=publish, clock=lambda: T0, lookup=copies.get)
    bases = {}
    for auction_id in AUCTIONS:
        state, _ = apply(None, envelope(started(auction_id, T0, T0 + 600_000), time_ms=T0))
        assert state is not None
        bases[auction_id] = state

    rng = random.Random(SEED)
    seen: dict[str, int] = dict.fromkeys(AUCTIONS, 0)
    regressions: list[tuple[str, int, int]] = []
    done = asyncio.Event()

    async def live_projection() -> None:
        for version in range(1, TOP + 1):
            items = [Projected.of(versions_of(bases[a], version).public()) for a in AUCTIONS]
            await store.write(items, "newer", T0)
            await asyncio.sleep(YIELD)  # let the other racers run
        done.set()

    corrections = 0

    async def lagging_reconciler() -> None:
        nonlocal corrections
        while not done.is_set():
            # The reconciler's copy is up to 5 versions behind or 2 ahead of what it last saw:
            # ahead, it writes (and races the projection's newer writes); behind, it must not.
            for a in AUCTIONS:
                copies[a] = versions_of(bases[a], min(TOP, max(1, seen[a] + rng.randint(-5, 2))))
            reconciler.rebuild(AUCTIONS)
            corrections += len(await reconciler.pass_once())

    async def observer() -> None:
        while not done.is_set():
            for auction_id, found in (await store.read_many(AUCTIONS)).items():
                assert not isinstance(found, Exception), found
                stored, _ = found
                if stored is None:
                    continue
                if stored["version"] < seen[auction_id]:
                    regressions.append((auction_id, seen[auction_id], stored["version"]))
                seen[auction_id] = max(seen[auction_id], stored["version"])
            await asyncio.sleep(YIELD)  # let the other racers run

    await asyncio.wait_for(asyncio.gather(live_projection(), lagging_reconciler(), observer()), 60)
    assert regressions == []
    assert corrections > 0, "the reconciler never wrote, so nothing raced"
    final = {a: found for a, found in (await store.read_many(AUCTIONS)).items() if not isinstance(found, Exception)}
    assert {a: s["version"] for a, (s, _) in final.items() if s} == dict.fromkeys(AUCTIONS, TOP)
    await client.delete(*(store.keys.timer(a) for a in AUCTIONS), store.keys.active, store.keys.reconciliations)
    await client.aclose()


async def test_corrections_are_streamed_audited_and_counted(redis_server: RedisServer, key_prefix: str) -> None:
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    store = ProjectionStore(client, Keys(key_prefix), ended_ttl_s=60)
    audits: list = []

    async def publish(record: object) -> None:
        audits.append(record)

    state, _ = apply(None, envelope(started("fix-1", T0, T0 + 60_000), time_ms=T0))
    assert state is not None
    lookup = {"fix-1": state}.get
    reconciler = Reconciler(store, interval_s=3600, sweep_s=3600, publish=publish, clock=lambda: T0, lookup=lookup)
    reconciler.rebuild(["fix-1"])
    [missing] = await reconciler.pass_once()
    assert (missing.what, missing.old) == ("missing", None)
    await client.hset(store.keys.timer("fix-1"), "ends_at_ms", str(T0 + 61_000))
    [drift] = await reconciler.pass_once()
    assert (drift.what, drift.delta_ms) == ("ends_at_drift", -1_000)
    assert await reconciler.pass_once() == []
    entries: list[Any] = await client.xrange(store.keys.reconciliations)  # type: ignore[assignment]
    assert [e[1]["what"] for e in entries] == ["missing", "ends_at_drift"]
    assert all(e[1]["trace_id"] == state.trace_id for e in entries)
    assert len(audits) == 2
    await client.delete(store.keys.timer("fix-1"), store.keys.active, store.keys.reconciliations)
    await client.aclose()


async def test_the_reconciler_follows_ids_and_lets_go_of_what_no_longer_belongs_in_redis(
    redis_server: RedisServer, key_prefix: str
) -> None:
    """It keeps ids, not states: a pass reads each state when it checks it, repairs what is
    wrong, and stops following an auction that left the table or whose hash has expired, and
    an ended one once it has compared its end."""
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    store = ProjectionStore(client, Keys(key_prefix), ended_ttl_s=60)
    live, ended = (apply(None, envelope(started(a, T0, T0 + 60_000), time_ms=T0))[0] for a in ("live", "old"))
    assert live is not None and ended is not None
    done = replace(ended, auction_id="done", status="ended", version=2, ended_at_ms=T0 - 2_000)
    ended = replace(ended, status="ended", version=2, ended_at_ms=T0 - 61_000)
    table: dict[str, TimerState] = {"live": live, "old": ended, "done": done}  # "gone" left the table

    async def publish(record: object) -> None:
        pass

    now = [T0]
    reconciler = Reconciler(store, interval_s=240, sweep_s=240, publish=publish, clock=lambda: now[0], lookup=table.get)
    reconciler.rebuild(["live", "gone", "old", "done"])
    assert sorted(c.auction_id for c in await reconciler.pass_once()) == ["done", "live"]
    assert list(reconciler.tracked) == ["live", "done"]  # found ended once: the next pass compares it again
    assert await client.exists(store.keys.timer("gone"), store.keys.timer("old")) == 0
    assert (await store.read("done") or {}).get("status") == "ended"
    # "live" ends between two passes: found ended by the first, let go by the second.
    table["live"] = replace(live, status="ended", version=2, ended_at_ms=T0)
    reconciler.on_change(table["live"])
    now[0] += 2_000
    assert [c.auction_id for c in await reconciler.pass_once()] == ["live"]
    assert list(reconciler.tracked) == ["live"]
    assert await reconciler.pass_once() == []
    assert list(reconciler.tracked) == []
    # No longer followed, an ended auction is still compared when a Reconcile command asks.
    await client.delete(store.keys.timer("done"))
    assert [c.auction_id for c in await reconciler.pass_once(["done"])] == ["done"]
    await client.delete(store.keys.timer("live"), store.keys.timer("done"), store.keys.active)
    markers = [k async for k in client.scan_iter(f"{store.keys.service}reconciled:*")]
    await client.delete(store.keys.reconciliations, *markers)
    await client.aclose()


async def test_a_pass_compares_changes_and_a_slice_and_everything_when_redis_may_have_lost_data(
    redis_server: RedisServer, key_prefix: str
) -> None:
    """At a 10 s interval and a 40 s sweep, a pass compares the settled changes, a quarter of
    the other followed auctions and, once more, what the pass before compared (which: the
    states it read). It compares all of them first, after a failed pass, when its marker is gone
    from Redis or older than the last it wrote, and after a pass during which Redis lost it."""
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    store = ProjectionStore(client, Keys(key_prefix), ended_ttl_s=60)
    now = [T0]
    ids = [f"slice-{i}" for i in range(8)]
    table = {a: s for a in ids if (s := apply(None, envelope(started(a, T0, T0 + 600_000), time_ms=T0))[0])}
    read: list[str] = []
    flush_when_read: list[str] = []  # an auction whose read, mid-pass, deletes the marker
    sync = redis.Redis(port=redis_server.port)

    def lookup(auction_id: str) -> TimerState | None:
        read.append(auction_id)
        if auction_id in flush_when_read:
            sync.delete(*sync.keys(f"{store.keys.service}reconciled:*"))
        return table.get(auction_id)

    async def publish(record: object) -> None:
        pass

    async def one_pass() -> tuple[set[str], list[str]]:
        """The auctions a pass read, and those it corrected."""
        read.clear()
        fixed = [c.auction_id for c in await reconciler.pass_once()]
        return set(read), sorted(fixed)

    async def marker() -> str:
        [key] = [k async for k in client.scan_iter(f"{store.keys.service}reconciled:*")]
        return str(key)

    reconciler = Reconciler(store, interval_s=10, sweep_s=40, publish=publish, clock=lambda: now[0], lookup=lookup)
    reconciler.rebuild(ids)
    assert await one_pass() == (set(ids), ids)  # the first pass compares all (here: projects all)
    assert await one_pass() == (set(ids), [])  # ... and the next compares them again, and a slice

    # A sweep over four passes compares each auction, two new ones a pass (and the two before).
    sweep = [await one_pass() for _ in range(3)]
    assert all(len(compared) == 4 and fixed == [] for compared, fixed in sweep)
    assert set().union(*(compared for compared, _ in sweep)) == set(ids)

    # A change whose projection was lost is compared once it has settled, not before.
    table["slice-0"] = replace(table["slice-0"], version=2)
    reconciler.on_change(table["slice-0"])
    compared, fixed = await one_pass()
    assert "slice-0" not in compared and fixed == [] and len(compared) <= 4
    now[0] += 2_000
    compared, fixed = await one_pass()
    assert "slice-0" in compared and fixed == ["slice-0"] and len(compared) <= 5

    # Failover to a replica that missed the last marker and a write before it (of an auction the
    # pass before did not compare): all compared, but an auction whose change has not settled
    # (its projection may be on its way).
    key = await marker()
    await client.set(key, int(str(await client.get(key))) - 1)
    victim = next(a for a in ids if a not in compared and a != "slice-3")
    await client.delete(store.keys.timer(victim))
    table["slice-3"] = replace(table["slice-3"], version=2)
    reconciler.on_change(table["slice-3"])
    assert await one_pass() == (set(ids) - {"slice-3"}, [victim])
    now[0] += 2_000
    compared, fixed = await one_pass()
    assert compared == set(ids) and fixed == ["slice-3"]  # what the full pass compared, again
    assert len((await one_pass())[0]) < len(ids)  # a slice pass again

    # Redis loses the marker (and what else it held) during a pass: the next pass compares all.
    flush_when_read.append(next(iter(reconciler._sweep[-2:] or ids)))
    compared, _ = await one_pass()
    assert len(compared) < len(ids)
    flush_when_read.clear()
    assert (await one_pass())[0] == set(ids)

    # FLUSHALL (here: our keys) between two slice passes: all compared, all projected again.
    await one_pass()
    assert len((await one_pass())[0]) < len(ids)
    await client.delete(await marker(), *(store.keys.timer(a) for a in ids), store.keys.active)
    assert await one_pass() == (set(ids), ids)

    # A pass that fails (Redis unreachable) leaves the next one to compare all.
    await one_pass()
    assert len((await one_pass())[0]) < len(ids)  # a slice pass again
    unreachable = aioredis.Redis(port=free_port())
    reconciler.store = ProjectionStore(unreachable, store.keys, ended_ttl_s=60)
    with pytest.raises(RedisError):
        await reconciler.pass_once()
    reconciler.store = store
    assert (await one_pass())[0] == set(ids)
    await unreachable.aclose()
    sync.close()
    await client.delete(await marker(), *(store.keys.timer(a) for a in ids), store.keys.active)
    await client.delete(store.keys.reconciliations)
    await client.aclose()


async def test_the_reconciler_gives_back_the_table_of_auctions_it_let_go(
    redis_server: RedisServer, key_prefix: str
) -> None:
    """A dict keeps the table it grew to: once the auctions a worker ended are let go (and when
    partitions are revoked), the ids left are copied into a table that fits them."""
    client = aioredis.Redis(port=redis_server.port, decode_responses=True)
    store = ProjectionStore(client, Keys(key_prefix), ended_ttl_s=60)
    first, _ = apply(None, envelope(started("e-0", T0, T0 + 60_000), time_ms=T0))
    assert first is not None
    table = {
        f"e-{i}": replace(first, auction_id=f"e-{i}", status="ended", version=2, ended_at_ms=T0) for i in range(2_000)
    }
    table["live"] = replace(first, auction_id="live")

    async def publish(record: object) -> None:
        pass

    now = [T0]
    reconciler = Reconciler(store, interval_s=240, sweep_s=240, publish=publish, clock=lambda: now[0], lookup=table.get)
    reconciler.rebuild(["live"])
    for state in table.values():
        reconciler.on_change(state)
    grown = sys.getsizeof(reconciler.tracked)
    now[0] += 2_000  # the changes have settled
    await reconciler.pass_once()
    await reconciler.pass_once()  # found ended by two passes: let go
    assert list(reconciler.tracked) == ["live"]
    assert sys.getsizeof(reconciler.tracked) < grown / 20
    for state in table.values():
        reconciler.on_change(state)
    grown = sys.getsizeof(reconciler.tracked)
    reconciler.revoke(list(table)[:-1])
    assert list(reconciler.tracked) == ["live"] and sys.getsizeof(reconciler.tracked) < grown / 20
    markers = [k async for k in client.scan_iter(f"{store.keys.service}reconciled:*")]
    await client.delete(store.keys.reconciliations, store.keys.active, *markers, *(store.keys.timer(a) for a in table))
    await client.aclose()
