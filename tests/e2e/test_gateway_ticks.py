"""The gateway ticks its viewers itself: an auction far from its end, with no tick coming
through Kafka, still gets a `tick` at least every interval on every socket that watches it.
A gateway process against real Kafka and Redis, and no worker: nothing else ticks."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from streams import events as ev
from streams import outputs
from streams.effects import TimerChanged
from streams.fold import apply
from streams.state import TimerState
from tests.support.contracts import check_asyncapi
from tests.support.events import bid, envelope, now_ms, started
from tests.support.gateway import Recorder, seed
from tests.support.kafka import kafka_io
from tests.support.stack import Stack
from tests.support.waiting import eventually

INTERVAL_MS = 1_000  # the stack's AUCTION_TIMER_TICK_INTERVAL_S
LATE_MS = 500  # what a loaded two-core machine may add to a wake-up (the worker's tick test allows as much)
EARLY_MS = 50  # app.gateway.ticker.GROUP_S: channels due that soon after the quietest tick with it
# Ends in 10 minutes; any bid in the hour-long window extends it by 15 minutes.
POLICY = ev.Policy(soft_close_window_ms=3_600_000, extension_ms=900_000, max_extension_ms=3_600_000)


def change(state: TimerState | None, event: ev.Payload) -> TimerChanged:
    now = now_ms()
    _, effects = apply(state, envelope(event, time_ms=now))
    [changed] = [e for e in effects if isinstance(e, TimerChanged)]
    return changed


def registration(auction_id: str) -> TimerChanged:
    now = now_ms()
    return change(None, started(auction_id, now - 1_000, now + 600_000, POLICY))


def ticks_of(recorder: Recorder, auction_id: str, count: int) -> Callable[[], Awaitable[bool]]:
    def enough() -> bool:
        return len([m for m in recorder.of_auction(auction_id) if m["type"] == "tick"]) >= count

    return lambda: asyncio.sleep(0, result=enough())


def assert_ticked_every_interval(first: dict[str, Any], ticks: list[dict[str, Any]], state: TimerState) -> None:
    """After `first` (a snapshot or a change), gateway ticks one interval apart (by the gateway's
    clock), numbered with no gap, each carrying the remembered state and its own remaining time."""
    assert ticks and all(t["type"] == "tick" for t in ticks)
    assert [t["seq"] for t in ticks] == list(range(first["seq"] + 1, first["seq"] + 1 + len(ticks)))
    for t in ticks:
        check_asyncapi("WsUpdate", t)
        assert (t["version"], t["ends_at_ms"], t["trace_id"]) == (state.version, state.ends_at_ms, state.trace_id)
        assert t["remaining_ms"] == state.ends_at_ms - t["server_time_ms"]
    times = [first["server_time_ms"]] + [t["server_time_ms"] for t in ticks]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    print(f"{state.auction_id}: gaps between messages {gaps} ms")
    assert gaps[0] <= INTERVAL_MS + LATE_MS, gaps  # the first tick at most an interval after `first`
    assert all(INTERVAL_MS - EARLY_MS <= gap <= INTERVAL_MS + LATE_MS for gap in gaps[1:]), gaps


async def test_watched_auctions_get_a_tick_every_interval_without_kafka_ticks(stack: Stack) -> None:
    _, base = stack.start_gateway()
    assert stack.redis is not None
    seeded = registration("quiet-seeded")  # known only through the gateway's snapshot read of Redis
    await seed(stack.redis.url, stack.key_prefix, seeded.state)
    fed = registration("quiet-fed")  # known only through a registration event on the feed
    ws_base = base.replace("http", "ws")
    async with aiohttp.ClientSession() as session, kafka_io(stack.kafka.bootstrap) as (producer, _):
        single = Recorder(await session.ws_connect(f"{ws_base}/auctions/quiet-seeded/updates")).start()
        many = Recorder(await session.ws_connect(f"{ws_base}/updates")).start()
        await many.ws.send_json({"type": "subscribe", "auctions": ["quiet-seeded", "quiet-fed"]})
        await eventually(lambda: asyncio.sleep(0, result=len(many.of_type("snapshot")) == 2), 10, "two snapshots")
        record = outputs.timer_event(fed)
        await producer.send_and_wait(record.topic, record.value, key=record.key)
        await eventually(ticks_of(single, "quiet-seeded", 4), 20, "four ticks of the seeded auction")
        await eventually(ticks_of(many, "quiet-seeded", 4), 20, "four ticks of it on the multiplexed socket")
        await eventually(ticks_of(many, "quiet-fed", 4), 20, "four ticks of the auction known from the feed")

        # A change through Kafka goes out at once and starts the interval again. Published 0.6 s
        # after a gateway tick, it is followed by the next tick about an interval later; without
        # the restart that tick would come at most 0.4 s after it.
        seen = len(single.messages)
        await eventually(lambda: asyncio.sleep(0, result=len(single.messages) > seen), 5, "the next tick")
        tick_at = single.arrived[-1]
        await eventually(lambda: asyncio.sleep(0, result=time.monotonic() >= tick_at + 0.6), 5, "0.6 s more")
        extension = change(seeded.state, bid("quiet-seeded", now_ms()))
        assert extension.kind == "extended"
        record = outputs.timer_event(extension)
        await producer.send_and_wait(record.topic, record.value, key=record.key)
        await eventually(ticks_of(single, "quiet-seeded", len(single.of_type("tick")) + 1), 10, "a tick after it")
        await single.stop()
        await many.stop()

    at = next(i for i, m in enumerate(single.messages) if m["type"] == "extended")
    before, extended, after = single.messages[at - 1 : at + 2]
    assert (before["type"], after["type"]) == ("tick", "tick")
    assert single.arrived[at] - single.arrived[at - 1] >= 0.6  # the premise: the change came late in an interval
    assert after["version"] == 2 and after["ends_at_ms"] == extension.state.ends_at_ms == extended["ends_at_ms"]
    assert after["seq"] == extended["seq"] + 1
    gap = single.arrived[at + 1] - single.arrived[at]
    print(f"the tick after the change came {gap * 1000:.0f} ms after it")
    assert gap >= 0.7

    assert_ticked_every_interval(single.messages[0], single.messages[1:at], seeded.state)
    snapshot, *updates = many.of_auction("quiet-seeded")
    assert_ticked_every_interval(snapshot, [m for m in updates if m["version"] == 1], seeded.state)
    snapshot, registered, *ticks = many.of_auction("quiet-fed")
    assert snapshot["state"] is None and registered["type"] == "registered"
    assert_ticked_every_interval(registered, ticks, fed.state)
