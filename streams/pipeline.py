"""One partition's way out: each round's records to Kafka, then, rounds in order, the newest
state of every auction they changed to the table's changelog, then the round's input batches
acknowledged (so Faust may commit them).

So an input is committed only after every record it caused and its changelog record are
acknowledged by Kafka, and the store (written through after the changelog) never holds a state
the changelog lacks. A delivery slower than DELIVERY_PATIENCE_S holds the partition, and so
do MAX_IN_FLIGHT records not yet acknowledged: the engine folds nothing new of it until Kafka
has taken the records (half of them, for the second).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.structs import RecordMetadata

from streams import outputs
from streams.clock import Clock
from streams.delivery import Outgoing
from streams.metrics import COMPLETION_LATENESS, HELD_GROUPS
from streams.state import TimerState
from streams.states import StateCache, Stored, encode_stored

log = logging.getLogger("auction_timer.pipeline")
# A healthy Kafka acknowledges within milliseconds; a delivery slower than this holds its partition.
DELIVERY_PATIENCE_S = 1.0
# Records (outputs and changelog entries) of one partition not yet acknowledged, at most: a worker
# folding a backlog faster than Kafka takes its outputs would otherwise hold them all in memory.
# Past it the partition folds nothing new until half are acknowledged.
MAX_IN_FLIGHT = 20_000


class Deliverer(Protocol):
    """What the pipeline needs of Kafka (streams/delivery.py's Delivery): records delivered
    once acknowledged, or an exception."""

    async def deliver(self, records: Sequence[Outgoing]) -> list[RecordMetadata]: ...


@dataclass(eq=False)
class Batch:
    """One Faust message: a fetched batch of one input partition, acknowledged as a whole."""

    ack: Callable[[], object]
    remaining: int


@dataclass(eq=False)
class Round:
    """What one pass of the fold over one partition produced."""

    records: list[outputs.Record]
    states: dict[bytes, Stored]
    batches: dict[Batch, int]
    completions: list[TimerState]
    outputs_done: asyncio.Event = field(default_factory=asyncio.Event)


class Pipeline:
    def __init__(
        self,
        partition: int,
        delivery: Deliverer,
        states: StateCache,
        changelog_topic: str,
        clock: Clock,
        on_release: Callable[[], None],
        on_fatal: Callable[[BaseException], None],
    ) -> None:
        self.partition = partition
        self.delivery = delivery
        self.states = states
        self.changelog_topic = changelog_topic
        self.clock = clock
        self.on_release = on_release  # the partition is no longer held or full: fold what waits
        self.on_fatal = on_fatal
        self.rounds: deque[Round] = deque()
        self.in_flight = 0  # records of the rounds not yet acknowledged
        self.full = False  # reached MAX_IN_FLIGHT, not yet back under half of it
        self.failing = 0  # deliveries of this partition slower than DELIVERY_PATIENCE_S right now
        self.writing: asyncio.Future[list[RecordMetadata]] | None = None
        self.broken = False
        self.closing = False  # revoked: acknowledge nothing more, start no more writes
        self._sending: set[asyncio.Future[Any]] = set()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Future[Any]] = set()
        self._writer = self._spawn(self._write_changelog())

    @property
    def held(self) -> bool:
        return self.failing > 0

    def submit(self, work: Round) -> None:
        self.rounds.append(work)
        self.in_flight += len(work.records) + len(work.states)
        self.full = self.full or self.in_flight >= MAX_IN_FLIGHT
        sending = self._spawn(self._send_outputs(work))
        self._sending.add(sending)
        sending.add_done_callback(self._sending.discard)

    def begin_close(self) -> None:
        """The partition is revoked: from now on nothing of it is acknowledged and no changelog
        write starts; outputs not yet delivered are dropped (the next owner folds their inputs
        again). A changelog write in flight goes on: the caller waits for it, a bounded time."""
        self.closing = True
        for task in list(self._sending):
            task.cancel()

    async def close(self) -> None:
        """Stop everything of the revoked partition."""
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task

    async def _send_outputs(self, work: Round) -> None:
        await self._deliver([Outgoing.of(r) for r in work.records])
        work.outputs_done.set()
        self._wake.set()

    async def _write_changelog(self) -> None:
        """The rounds, in order: the changelog once their outputs are in, then the acks."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            done: list[Round] = []
            while self.rounds and self.rounds[0].outputs_done.is_set():
                done.append(self.rounds.popleft())
            if not done or self.closing:
                continue
            newest: dict[bytes, Stored] = {}
            for work in done:
                newest.update(work.states)
            topic, partition = self.changelog_topic, self.partition
            entries = [Outgoing(topic, key, encode_stored(value), partition) for key, value in newest.items()]
            self.writing = self._spawn(self._deliver(entries))
            written = await self.writing
            self.writing = None
            if self.closing:
                return  # in the changelog now, but the next owner may refold before the store has it
            for (key, value), entry in zip(newest.items(), entries, strict=True):
                self.states.written(key, value, entry.value)
            if written:
                self.states.raw.persisted(self.partition, max(meta.offset for meta in written))
            now = self.clock()
            for work in done:
                for state in work.completions:
                    COMPLETION_LATENESS.observe(max(0, now - state.ends_at_ms))
                for batch, count in work.batches.items():
                    batch.remaining -= count
                    if batch.remaining == 0:
                        batch.ack()
                self.in_flight -= len(work.records) + len(work.states)
            if self.full and self.in_flight < MAX_IN_FLIGHT // 2:
                self.full = False
                if not self.held:
                    self.on_release()

    async def _deliver(self, records: Sequence[Outgoing]) -> list[RecordMetadata]:
        if not records:
            return []
        first: asyncio.Future[list[RecordMetadata]] = self._spawn(self.delivery.deliver(records))
        done, _ = await asyncio.wait({first}, timeout=DELIVERY_PATIENCE_S)
        if done:
            return first.result()
        # Slower than a healthy Kafka: hold this partition until it is through.
        self.failing += 1
        HELD_GROUPS.inc()
        started = self.clock()
        log.warning(
            "Kafka has not acknowledged records after %.0f s; holding partition %d",
            DELIVERY_PATIENCE_S, self.partition, extra={"records": len(records), "partition": self.partition},
        )  # fmt: skip
        try:
            return await first
        finally:
            self.failing -= 1
            HELD_GROUPS.dec()
            log.warning(
                "Kafka acknowledged the held records; partition %d goes on", self.partition,
                extra={"held_ms": self.clock() - started, "partition": self.partition},
            )  # fmt: skip
            if not self.held:
                self.on_release()

    def _spawn(self, work: Any) -> asyncio.Future[Any]:
        task: asyncio.Future[Any] = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or task.exception() is None or self.broken:
            return
        # Kafka refused for good, or a bug in the way out: nothing of this partition can be
        # acknowledged any more. Reported once (the tasks waiting on this one fail with it).
        self.broken = True
        log.error("partition %d's pipeline failed", self.partition, exc_info=task.exception())
        self.on_fatal(task.exception())  # type: ignore[arg-type]
