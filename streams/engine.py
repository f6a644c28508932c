"""The worker's loop body: input batches in, folded in the log's order, records and changelog out,
inputs acknowledged only once both are safely in Kafka.

Per partition number p ("group") of the co-partitioned input topics:
1. Batches from the four input partitions wait in a `Merger` until the log's order allows
   them out (see streams/order.py); end-offset lookups tell when an idle partition holds
   nothing unseen.
2. Released records are folded one after another (the engine's lock: one fold at a time).
   What one pass folds is a round: its output records go to Kafka at once.
3. A group's changelog writer takes the rounds in order once their outputs are acknowledged,
   writes the newest state of each auction they changed to the changelog, and when Kafka has
   acknowledged that too, writes the states through to the store and acknowledges the
   rounds' input batches to Faust, which commits them. So no input is committed before every
   record it caused (changelog included) is in Kafka, and the store never holds a state the
   changelog lacks.
A delivery that fails holds that group only (it folds nothing new until Kafka takes the
records) and is retried; other groups go on. A revoked group is dropped: its unacknowledged
inputs go to the partition's next owner, which folds them again to the same records.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streams import effects as fx
from streams import outputs, topics
from streams.clock import Clock, wall_ms
from streams.delivery import Delivery, Outgoing
from streams.message import LOG_APPEND_TIME, Message
from streams.metrics import COMPLETION_LATENESS, EVENTS, HELD_GROUPS, HELD_INPUTS
from streams.order import Merger
from streams.processor import TimerProcessor
from streams.state import TimerState
from streams.states import StateCache, Stored, encode_stored

log = logging.getLogger("auction_timer.engine")
RANK = {name: rank for rank, name in enumerate(topics.INPUT_TOPICS)}
BIDS = RANK[topics.BID_PLACED]
ASK_INTERVAL_S = 0.005  # at most one end-offset lookup per 5 ms
REVOKE_WAIT_S = 5.0  # how long a revocation waits for a changelog write in flight (within the 10 s session)
MAX_BUFFERED = 50_000  # records a held group buffers before its partitions are paused
# A healthy Kafka acknowledges within milliseconds; a delivery slower than this holds its group.
DELIVERY_PATIENCE_S = 1.0


class LogProbe(Protocol):
    """Where the input partitions end, and where this worker's group starts reading them."""

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def start_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...


class Record(Protocol):
    """What Faust hands over of a Kafka record (aiokafka's ConsumerRecord)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None


@dataclass(eq=False)
class Batch:
    """One Faust message: a fetched batch of one input partition, acknowledged as a whole."""

    ack: Callable[[], object]
    remaining: int


@dataclass(eq=False)
class Round:
    records: list[outputs.Record]
    states: dict[bytes, Stored]
    batches: dict[Batch, int]
    completions: list[TimerState]
    outputs_done: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass(eq=False)
class Group:
    partition: int
    merger: Merger[tuple[Message, Batch]] = field(default_factory=lambda: Merger(len(topics.INPUT_TOPICS)))
    next_offset: list[int | None] = field(default_factory=lambda: [None] * len(topics.INPUT_TOPICS))
    rounds: deque[Round] = field(default_factory=deque)
    wake_writer: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    writer: asyncio.Task[None] | None = None
    writing: asyncio.Task[Any] | None = None
    failing: int = 0  # deliveries of this group retrying right now
    paused: bool = False
    folded_bids_to_ms: int = 0  # log time of the newest bid folded
    bids_caught_up_ms: int = 0  # when a lookup last found every bid of the partition received

    @property
    def held(self) -> bool:
        return self.failing > 0

    def tps(self) -> list[TopicPartition]:
        return [TopicPartition(name, self.partition) for name in topics.INPUT_TOPICS]


ChangeHook = Callable[[fx.TimerChanged], Awaitable[None]]


class Engine:
    def __init__(
        self,
        processor: TimerProcessor,
        states: StateCache,
        delivery: Delivery,
        probe: LogProbe,
        changelog_topic: str,
        on_change: ChangeHook,
        on_reconcile: Callable[[str], None],
        pause: Callable[[list[TopicPartition]], None] = lambda tps: None,
        resume: Callable[[list[TopicPartition]], None] = lambda tps: None,
        clock: Clock = wall_ms,
    ) -> None:
        self.processor = processor
        self.states = states
        self.delivery = delivery
        self.probe = probe
        self.changelog_topic = changelog_topic
        self.on_change = on_change
        self.on_reconcile = on_reconcile
        self.pause = pause
        self.resume = resume
        self.clock = clock
        self.groups: dict[int, Group] = {}
        self._lock = asyncio.Lock()
        self._newest_seen_ms = 0
        self._asking: asyncio.Task[None] | None = None
        self._bids_wanted = False

    # -- partitions come and go ------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        """Partitions this worker now owns: fresh groups (their store contents may have changed).
        Faust may deliver a batch of a new assignment before it announces the assignment, so
        `receive` creates a missing group too."""
        for partition in partitions:
            self._group(partition)

    def _group(self, partition: int) -> Group:
        group = self.groups.get(partition)
        if group is None:
            self.states.forget_partitions({partition})
            group = self.groups[partition] = Group(partition)
            group.writer = asyncio.get_running_loop().create_task(self._write_changelog(group))
            self._ask()
        return group

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Drop the groups of revoked partitions. A changelog write in flight is waited for (a
        bounded time), so it cannot land after the next owner's writes."""
        for partition in partitions:
            group = self.groups.pop(partition, None)
            if group is None:
                continue
            HELD_INPUTS.dec(len(group.merger.drop()))
            if group.writing is not None:
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(group.writing), REVOKE_WAIT_S)
            for task in [*group.tasks, group.writer]:
                if task is not None:
                    task.cancel()
            if group.paused:
                self.resume(group.tps())
        self.states.forget_partitions(set(partitions))

    # -- inputs ------------------------------------------------------------------------------

    async def receive(self, topic: str, partition: int, records: Sequence[Record], ack: Callable[[], object]) -> None:
        """One fetched batch of one input partition of the current assignment (Faust's agent calls
        this; Faust skips batches fetched under an older one)."""
        if not records:
            return
        group = self._group(partition)
        rank = RANK[topic]
        batch = Batch(ack, len(records))
        group.merger.add(rank, [
            (r.timestamp, r.offset, (Message(topic, partition, r.offset, r.timestamp, r.key, r.value,
                                             r.timestamp_type == LOG_APPEND_TIME), batch))
            for r in records
        ])  # fmt: skip
        group.next_offset[rank] = records[-1].offset + 1
        self._newest_seen_ms = max(self._newest_seen_ms, max(r.timestamp for r in records))
        HELD_INPUTS.inc(len(records))
        async with self._lock:
            await self._drain(group)

    async def _drain(self, group: Group) -> None:
        if group.held:
            if len(group.merger) > MAX_BUFFERED and not group.paused:
                group.paused = True
                self.pause(group.tps())
            return
        ready = group.merger.pop_ready()
        if ready:
            HELD_INPUTS.dec(len(ready))
            await self._fold(group, ready)
        if group.paused and len(group.merger) < MAX_BUFFERED // 2:
            group.paused = False
            self.resume(group.tps())
        if group.merger.blocked_on():
            self._ask()

    async def _fold(self, group: Group, ready: list[tuple[Message, Batch]]) -> None:
        records: list[outputs.Record] = []
        batches: dict[Batch, int] = {}
        completions: list[TimerState] = []
        per_topic: dict[str, int] = {}
        for msg, batch in ready:
            per_topic[msg.topic] = per_topic.get(msg.topic, 0) + 1
            try:
                outcome = self.processor.process(msg)
            except Exception as exc:  # noqa: BLE001 - a bug met this record; the DLQ keeps it
                outcome = self.processor.internal_error(msg, exc)
            records += outcome.records
            batches[batch] = batches.get(batch, 0) + 1
            for change in outcome.changes:
                await self.on_change(change)
                if change.kind == "completed":
                    completions.append(change.state)
            for auction_id in outcome.reconcile:
                self.on_reconcile(auction_id)
            if msg.topic == topics.BID_PLACED:
                group.folded_bids_to_ms = max(group.folded_bids_to_ms, msg.timestamp_ms)
        for topic, count in per_topic.items():
            EVENTS.labels(topic).inc(count)
        work = Round(records, self.states.take_unwritten(), batches, completions)
        group.rounds.append(work)
        self._spawn(group, self._send_outputs(group, work))

    # -- outputs, changelog, acknowledgements -------------------------------------------------

    async def _send_outputs(self, group: Group, work: Round) -> None:
        await self._deliver(group, [Outgoing.of(r) for r in work.records])
        work.outputs_done.set()
        group.wake_writer.set()

    async def _write_changelog(self, group: Group) -> None:
        """The group's rounds, in order: changelog once their outputs are in, then acks."""
        while True:
            await group.wake_writer.wait()
            group.wake_writer.clear()
            done: list[Round] = []
            while group.rounds and group.rounds[0].outputs_done.is_set():
                done.append(group.rounds.popleft())
            if not done:
                continue
            newest: dict[bytes, Stored] = {}
            for work in done:
                newest.update(work.states)
            entries = [
                Outgoing(self.changelog_topic, key, encode_stored(s), group.partition) for key, s in newest.items()
            ]
            group.writing = asyncio.ensure_future(self._deliver(group, entries))
            written = await group.writing
            group.writing = None
            for key, state in newest.items():
                self.states.written(key, state)
            if written:
                self.states.raw.persisted(group.partition, max(m.offset for m in written))
            now = self.clock()
            for work in done:
                for state in work.completions:
                    COMPLETION_LATENESS.observe(max(0, now - state.ends_at_ms))
                for batch, count in work.batches.items():
                    batch.remaining -= count
                    if batch.remaining == 0:
                        batch.ack()

    async def _deliver(self, group: Group, records: Sequence[Outgoing]) -> list[Any]:
        if not records:
            return []
        first = asyncio.ensure_future(self.delivery.deliver(records))
        done, _ = await asyncio.wait({first}, timeout=DELIVERY_PATIENCE_S)
        if done:
            return first.result()
        # Slower than a healthy Kafka: hold this group (fold nothing new of it) until it is through.
        group.failing += 1
        HELD_GROUPS.inc()
        started = self.clock()
        log.warning(
            "Kafka has not acknowledged records after %.0f s; holding partition %d",
            DELIVERY_PATIENCE_S, group.partition, extra={"records": len(records), "partition": group.partition},
        )  # fmt: skip
        try:
            return await first
        finally:
            group.failing -= 1
            HELD_GROUPS.dec()
            log.warning(
                "Kafka acknowledged the held records; partition %d goes on", group.partition,
                extra={"held_ms": self.clock() - started, "partition": group.partition},
            )  # fmt: skip
            if not group.held:
                self._spawn(group, self._locked_drain(group))

    async def _locked_drain(self, group: Group) -> None:
        async with self._lock:
            if self.groups.get(group.partition) is group:
                await self._drain(group)

    def _spawn(self, group: Group, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        group.tasks.add(task)
        task.add_done_callback(group.tasks.discard)

    # -- evidence: which idle partitions hold nothing unseen ----------------------------------

    def _ask(self) -> None:
        if self._asking is None:
            self._asking = asyncio.get_running_loop().create_task(self._ask_loop())

    async def _ask_loop(self) -> None:
        try:
            while True:
                wanted = {
                    TopicPartition(topics.INPUT_TOPICS[rank], g.partition)
                    for g in self.groups.values()
                    for rank in (range(len(topics.INPUT_TOPICS)) if None in g.next_offset else g.merger.blocked_on())
                }
                if self._bids_wanted:
                    self._bids_wanted = False
                    wanted |= {TopicPartition(topics.BID_PLACED, p) for p in self.groups}
                if not wanted:
                    return
                sent_ms, newest = self.clock(), self._newest_seen_ms
                try:
                    unknown = [tp for tp in wanted if self._next(tp) is None]
                    starts = await self.probe.start_offsets(unknown) if unknown else {}
                    ends = await self.probe.end_offsets(sorted(wanted))
                except (KafkaError, OSError, TimeoutError) as exc:
                    log.warning("end-offset lookup failed; asking again", extra={"error": repr(exc)[:300]})
                    await asyncio.sleep(0.5)
                    continue
                # Everything the log took up to here is known; a record appended later gets a
                # later time. Taking the older of the two clocks keeps a fast worker clock harmless.
                as_of = min(sent_ms - 1, newest)
                async with self._lock:
                    for tp, end in ends.items():
                        group = self.groups.get(tp.partition)
                        if group is None:
                            continue
                        rank = RANK[tp.topic]
                        if group.next_offset[rank] is None and tp in starts:
                            group.next_offset[rank] = starts[tp]
                        position = group.next_offset[rank]
                        if position is not None and position >= end:
                            group.merger.caught_up(rank, as_of)
                            if rank == BIDS:
                                group.bids_caught_up_ms = sent_ms
                    for group in list(self.groups.values()):
                        await self._drain(group)
                await asyncio.sleep(ASK_INTERVAL_S)
        finally:
            self._asking = None

    def _next(self, tp: TopicPartition) -> int | None:
        group = self.groups.get(tp.partition)
        return None if group is None else group.next_offset[RANK[tp.topic]]

    def watermark(self, partition: int) -> int | None:
        """Up to when every bid of `partition` has been folded: the log time of the newest folded
        bid, or, when none waits, the time a lookup last found the partition caught up."""
        group = self.groups.get(partition)
        if group is None:
            return None
        idle = group.merger.queued(BIDS) == 0 and group.bids_caught_up_ms
        return max(group.folded_bids_to_ms, group.bids_caught_up_ms if idle else 0)

    def watch_watermarks(self) -> None:
        """Look up the bid partitions' ends (the metric's evidence when no bid is waiting)."""
        self._bids_wanted = True
        self._ask()
