"""The scheduler loop: exact deadlines and periodic ticks for the partitions this worker owns.

It sleeps until the earlier of the next deadline and the next tick (or until a
change wakes it), writes ExpireTimer / StartTimer to auctions.timer.commands at
deadlines, and TimerTicks to auctions.timer.ticks. It never writes the table:
the fold, through the agent, is the only writer. Its clock only decides when to
ask: whether a command is due is the fold's decision, by the log's clock.
Every send's result is checked; a command that did not reach Kafka is fired
again (REFIRE_MS), a tick that did not is counted and superseded by the next.

A change's tick waits in a queue the loop empties; an auction's newer change replaces its
waiting tick, and past MAX_PENDING_CHANGE_TICKS the oldest is dropped (counted): a worker
folding a backlog changes auctions faster than it sends ticks, and the change itself is in
the timer event anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from streams import events as ev
from streams import outputs
from streams.clock import wall_ms
from streams.metrics import CHANGE_TICKS_DROPPED, COMMANDS_SENT, SEND_FAILURES, TICK_DELAY
from streams.schedule import Due, Schedule
from streams.state import TimerState
from streams.tracing import child_traceparent

log = logging.getLogger("auction_timer.scheduler")
SOURCE = "urn:auction-timer:scheduler"
MAX_PENDING_CHANGE_TICKS = 50_000  # about 50 MB of ticks

Send = Callable[[outputs.Record], Awaitable["asyncio.Future[Any]"]]


class Scheduler:
    """`send_command` carries deadlines (latency-critical); `send_tick` carries ticks (bulk).
    Both return the delivery future of the record they queued. `lookup` reads an auction's
    current state in the table (the schedule keeps only what planning needs); None when the
    auction is not in this worker's partitions."""

    def __init__(
        self,
        tick_interval_s: float,
        send_command: Send,
        send_tick: Send,
        lookup: Callable[[str], TimerState | None],
        clock: Callable[[], int] = wall_ms,
        tick_horizon_s: float = 300.0,
        lateness_ms: int = 0,
    ) -> None:
        self.schedule = Schedule(int(tick_interval_s * 1000), int(tick_horizon_s * 1000), lateness_ms)
        self._send_command = send_command
        self._send_tick = send_tick
        self._lookup = lookup
        self._clock = clock
        self._wake = asyncio.Event()
        self._change_ticks: dict[str, outputs.Record] = {}  # by auction, oldest first

    def on_change(self, state: TimerState) -> None:
        """A new version from the fold: re-plan its deadlines and tick at once with it. Called
        inside the fold, so it only queues the tick: the scheduler's loop sends it next."""
        now = self._clock()
        seq = self.schedule.tick_now(state, now)
        self.schedule.track(state, now)
        self._change_ticks.pop(state.auction_id, None)  # superseded: to the back with the newest
        self._change_ticks[state.auction_id] = outputs.tick(state, seq, now)
        if len(self._change_ticks) > MAX_PENDING_CHANGE_TICKS:
            del self._change_ticks[next(iter(self._change_ticks))]
            CHANGE_TICKS_DROPPED.inc()
        self._wake.set()

    def rebuild(self, partitions: Iterable[int], states: Iterable[TimerState]) -> None:
        """After a rebalance or restart: follow exactly the live timers of the owned partitions.
        Deadlines that passed while nobody owned them are due now and fire on the next turn."""
        self.schedule.clear()
        now = self._clock()
        for state in states:
            self.schedule.track(state, now)
        log.info("schedule rebuilt", extra={"partitions": sorted(partitions), "live_timers": len(self.schedule)})
        self._wake.set()

    def revoke(self, auction_ids: Iterable[str]) -> None:
        for auction_id in auction_ids:
            self.schedule.forget(auction_id)

    async def run(self) -> None:
        while True:
            await self._sleep_until_due()
            ticks, self._change_ticks = list(self._change_ticks.values()), {}
            for record in ticks:
                try:
                    checked(await self._send_tick(record), "tick")
                except Exception:
                    SEND_FAILURES.labels("tick").inc()
                    log.warning("scheduler could not queue a tick", exc_info=True)
            now = self._clock()
            # Deadlines first: a burst of ticks due at the same moment must not delay them.
            for due in sorted(self.schedule.pop_due(now), key=lambda d: d.kind == "tick"):
                try:
                    state = self._current(due, now)
                    if state is not None:
                        await self._fire(due, state, now)
                except Exception:  # a failed read or send must not stop the loop; the entry re-fires
                    log.exception("scheduler could not act on a due entry", extra={"auction_id": due.auction_id})

    def _current(self, due: Due, now: int) -> TimerState | None:
        """The state a due entry acts on, read just before it fires (one at a time: a backlog's
        thousands of due entries must not hold their states at once). None when the entry is
        stale (its auction forgotten meanwhile, revoked while an earlier entry was sent, or
        planned again) or its state cannot be read now (its partition is being handed over:
        a deadline's entry comes round again, re-armed when it was popped). A table that
        disagrees with the plan wins: the schedule follows the table's state from then on, so
        that a deadline is never skipped forever."""
        planned = self.schedule.live.get(due.auction_id)
        if planned is None or planned.version != due.version:
            return None
        state = self._lookup(due.auction_id)
        if state is None:
            return None
        if state.version != planned.version:
            log.warning(
                "the schedule disagreed with the table; following the table",
                extra={"auction_id": due.auction_id, "planned": planned.version, "stored": state.version},
            )
            self.schedule.forget(due.auction_id)
            self.schedule.track(state, now)
            return None
        return state

    async def _sleep_until_due(self) -> None:
        if self._change_ticks:
            return
        self._wake.clear()
        due = self.schedule.next_due_ms()
        if due is not None and due <= self._clock():
            return
        timeout = None if due is None else (due - self._clock()) / 1000
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), timeout)

    async def _fire(self, due: Due, state: TimerState, now: int) -> None:
        if due.kind == "tick":
            TICK_DELAY.observe(max(0, now - due.due_ms))
            checked(await self._send_tick(outputs.tick(state, due.seq, now)), "tick")
            return
        payload: ev.ExpireTimer | ev.StartTimer
        if due.kind == "expire":
            payload = ev.ExpireTimer(state.auction_id, state.version, now)
        else:
            payload = ev.StartTimer(state.auction_id, state.version, now)
        # A random id: two schedulers racing for the same deadline send two distinct commands,
        # and the fold's version check (not the duplicate check) turns the second into a no-op.
        command_id = f"{state.auction_id}:{due.kind}:v{state.version}:{uuid.uuid4().hex[:12]}"
        traceparent = child_traceparent(state.traceparent, command_id)
        record = outputs.input_record(payload, command_id, now, traceparent, SOURCE)
        checked(await self._send_command(record), due.kind)
        COMMANDS_SENT.labels(due.kind).inc()


def checked(future: asyncio.Future[Any], what: str) -> None:
    """Count and log a send that Kafka did not acknowledge (without waiting for it here)."""

    def done(fut: asyncio.Future[Any]) -> None:
        if fut.cancelled() or fut.exception() is None:
            return
        SEND_FAILURES.labels(what).inc()
        log.warning("scheduler send failed", extra={"what": what, "error": repr(fut.exception())[:300]})

    future.add_done_callback(done)
