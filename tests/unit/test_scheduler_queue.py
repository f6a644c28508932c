"""A change's tick: one waits per auction (the newest), and the queue is bounded, so that a
worker folding a backlog faster than it sends ticks does not hold them all."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import orjson
import pytest
from prometheus_client import REGISTRY

from streams import outputs, scheduler, topics
from streams.schedule import REFIRE_FIRST_MS, Planned
from streams.scheduler import Scheduler
from streams.state import TimerState
from streams.tracing import new_traceparent
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

    s = Scheduler(5, send, send, lambda _: None, clock=lambda: T0)
    dropped_before = REGISTRY.get_sample_value(DROPPED) or 0.0
    a = timer("a", T0 + 60_000)
    s.on_change(a)
    s.on_change(timer("b", T0 + 60_000))
    s.on_change(replace(a, version=2))  # replaces a's waiting tick, and goes to the back with it
    s.on_change(timer("c", T0 + 60_000))
    assert REGISTRY.get_sample_value(DROPPED) == dropped_before
    s.on_change(timer("d", T0 + 60_000))  # a fourth: the oldest waiting (b's) is dropped
    assert REGISTRY.get_sample_value(DROPPED) == dropped_before + 1
    await run_until(s, three)
    assert [(r.key, orjson.loads(r.value)["data"]["version"]) for r in sent] == [(b"a", 2), (b"c", 1), (b"d", 1)]


async def test_a_deadline_fires_with_the_state_read_when_it_is_due_and_the_table_wins() -> None:
    """The schedule keeps only what planning needs: a command is built from the state read when
    it is due. A table that disagrees with the plan wins: nothing is sent for the planned
    version, and the schedule follows the table's from then on."""
    a, b = timer("a", T0 + 1_000), timer("b", T0 + 500)
    read_a = replace(a, traceparent=new_traceparent())  # what the table holds: not the object planned
    current = {"a": read_a, "b": replace(b, version=2, ends_at_ms=T0 + 9_000)}
    commands: list[outputs.Record] = []
    sent = asyncio.Event()

    async def send(record: outputs.Record) -> asyncio.Future[Any]:
        if record.topic == topics.COMMANDS:
            commands.append(record)
            sent.set()
        return done()

    s = Scheduler(60, send, send, current.get, clock=lambda: T0 + 1_000)
    s.on_change(a)
    s.on_change(b)  # b's deadline (T0 + 500) comes first, but the table holds b's version 2
    await run_until(s, sent)
    assert [(r.key, orjson.loads(r.value)["data"]["version"]) for r in commands] == [(b"a", 1)]
    assert orjson.loads(commands[0].value)["traceparent"][3:35] == read_a.trace_id != a.trace_id
    assert s.schedule.live["b"] == Planned(version=2, ends_at_ms=T0 + 9_000, scheduled=False)


async def test_an_auction_forgotten_while_an_earlier_deadline_is_sent_is_not_fired() -> None:
    """A revocation during a send forgets its auctions; their entries already due are dropped,
    and their partition's store is not read."""
    a, b = timer("a", T0 + 1_000), timer("b", T0 + 500)
    reads: list[str] = []
    commands: list[bytes] = []
    now = [T0 + 1_000]
    refired = asyncio.Event()

    def lookup(auction_id: str) -> TimerState:
        reads.append(auction_id)
        return {"a": a, "b": b}[auction_id]

    async def send(record: outputs.Record) -> asyncio.Future[Any]:
        if record.topic == topics.COMMANDS:
            commands.append(record.key)
            if len(commands) == 1:
                s.revoke(["a"])  # revoked while b's command is being sent, a's entry due after it
                now[0] += REFIRE_FIRST_MS  # b's refire: proof the loop went on past a's entry
            else:
                refired.set()
        return done()

    s = Scheduler(60, send, send, lookup, clock=lambda: now[0])
    s.on_change(a)
    s.on_change(b)
    await run_until(s, refired)
    assert (commands, reads) == ([b"b", b"b"], ["b", "b"])


async def test_a_deadline_whose_state_cannot_be_read_yet_fires_when_it_comes_round_again() -> None:
    """A state not readable at the moment (its partition being handed over) skips the entry but
    keeps the deadline: it fires when it comes round again."""
    a = timer("a", T0 + 1_000)
    now = [T0 + 1_000]
    reads: list[str] = []
    commands: list[bytes] = []
    sent = asyncio.Event()

    def lookup(auction_id: str) -> TimerState | None:
        reads.append(auction_id)
        if len(reads) == 1:
            now[0] += REFIRE_FIRST_MS  # the entry re-armed when it was popped comes round
            return None
        return a

    async def send(record: outputs.Record) -> asyncio.Future[Any]:
        if record.topic == topics.COMMANDS:
            commands.append(record.key)
            sent.set()
        return done()

    s = Scheduler(60, send, send, lookup, clock=lambda: now[0])
    s.on_change(a)
    await run_until(s, sent)
    assert (commands, reads, list(s.schedule.live)) == ([b"a"], ["a", "a"], ["a"])


async def run_until(s: Scheduler, event: asyncio.Event) -> None:
    """Run the scheduler's loop until `event` is set (at most 5 s)."""
    loop = asyncio.create_task(s.run())
    try:
        await asyncio.wait_for(event.wait(), 5)
    finally:
        loop.cancel()


def done() -> asyncio.Future[Any]:
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    future.set_result(None)
    return future
