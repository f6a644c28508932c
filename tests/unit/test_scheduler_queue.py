"""A change's tick: one waits per auction (the newest), and the queue is bounded, so that a
worker folding a backlog faster than it sends ticks does not hold them all."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from streams import outputs, scheduler
from streams.scheduler import Scheduler
from tests.support.events import T0
from tests.unit.test_schedule import timer

DROPPED = "auctions_timer_change_ticks_dropped_total"


async def test_one_tick_waits_per_auction_and_past_the_bound_the_oldest_is_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(scheduler, "MAX_PENDING_CHANGE_TICKS", 3)
    sent: list[outputs.Record] = []
    three = asyncio.Event()

    async def send(record: outputs.Record) -> asyncio.Future[Any]:
        sent.append(record)
        if len(sent) == 3:
            three.set()
        done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    s = Scheduler(5, send, send, clock=lambda: T0)
    dropped_before = REGISTRY.get_sample_value(DROPPED) or 0.0
    a = timer("a", T0 + 60_000)
    s.on_change(a)
    s.on_change(timer("b", T0 + 60_000))
    s.on_change(replace(a, version=2))  # replaces a's waiting tick, and goes to the back with it
    s.on_change(timer("c", T0 + 60_000))
    assert REGISTRY.get_sample_value(DROPPED) == dropped_before
    s.on_change(timer("d", T0 + 60_000))  # a fourth: the oldest waiting (b's) is dropped
    assert REGISTRY.get_sample_value(DROPPED) == dropped_before + 1
    loop = asyncio.create_task(s.run())
    try:
        await asyncio.wait_for(three.wait(), 5)
    finally:
        loop.cancel()
    assert [(r.key, orjson.loads(r.value)["data"]["version"]) for r in sent] == [(b"a", 2), (b"c", 1), (b"d", 1)]
