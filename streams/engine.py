"""The worker's loop body: input batches in, folded in the log's order, then out through each
partition's pipeline (streams/pipeline.py), which acknowledges an input only once everything
it caused is in Kafka.

Per partition number p of the co-partitioned input topics (a "group"): each input partition is
taken contiguously from where the consumer group starts it (a batch that would leave a hole is
fetched again, see `receive`); batches from the four input partitions wait in a `Merger` until
the log's order lets them out (streams/order.py; end-offset lookups in streams/evidence.py tell
when an idle partition holds nothing unseen); released records are folded one after another,
synchronously (a pass never yields to the event loop, so nothing can interleave with it: not
another fold, not a revocation); what one pass folds is a round, handed to the group's
pipeline. A group whose pipeline is held by a slow or failing Kafka folds nothing new until it
is released; other groups go on. A revoked group is dropped: its unacknowledged inputs go to
the partition's next owner, which folds them again to the same records.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

from aiokafka import TopicPartition

from streams import effects as fx
from streams import outputs, topics
from streams.clock import Clock, wall_ms
from streams.evidence import Evidence, LogProbe
from streams.message import LOG_APPEND_TIME, Message
from streams.metrics import EVENTS, HELD_INPUTS, REFETCHES
from streams.order import Merger, order_time
from streams.pipeline import Batch, Deliverer, Pipeline, Round
from streams.processor import TimerProcessor
from streams.state import TimerState
from streams.states import StateCache

log = logging.getLogger("auction_timer.engine")
RANK = {name: rank for rank, name in enumerate(topics.INPUT_TOPICS)}
BIDS = RANK[topics.BID_PLACED]
REVOKE_WAIT_S = 5.0  # how long a revocation waits for changelog writes in flight (within the 10 s session)
# What one input partition buffers before it is paused (resumed at half): records, and bytes
# (an oversized input is dead-lettered, but buffered whole until then).
MAX_QUEUED = 5_000
MAX_QUEUED_BYTES = 32 * 1024 * 1024
# Inputs folded in one round (one delivery of their outputs) at most: a backlog released at once
# is folded round after round, each counted against the pipeline's bound on unacknowledged records.
MAX_ROUND_INPUTS = 1_000
STUCK_LOOKS = 2  # looks in a row (after the first) a partition's positions stand still before a refetch


class Record(Protocol):
    """What Faust hands over of a Kafka record (aiokafka's ConsumerRecord)."""

    offset: int
    timestamp: int
    timestamp_type: int
    key: bytes | None
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Fetched:
    """One batch as received: its records and the consumer's positions before and after it."""

    records: Sequence[Record]
    ack: Callable[[int | None], object]
    start: int
    end: int


@dataclass(eq=False)
class Group:
    partition: int
    pipeline: Pipeline
    merger: Merger[tuple[Message, Batch]] = field(default_factory=lambda: Merger(len(topics.INPUT_TOPICS)))
    next_offset: list[int | None] = field(default_factory=lambda: [None] * len(topics.INPUT_TOPICS))
    # Batches that came before the partition's start was known, and the ranks being fetched again.
    waiting: list[list[Fetched]] = field(default_factory=lambda: [[] for _ in topics.INPUT_TOPICS])
    refetching: set[int] = field(default_factory=set)
    # (next offset, consumer position) at the last look, and how many looks in a row it stood there
    looked: list[tuple[tuple[int | None, int], int]] = field(
        default_factory=lambda: [((None, -1), 0)] * len(topics.INPUT_TOPICS)
    )
    last_log_ms: list[int] = field(default_factory=lambda: [0] * len(topics.INPUT_TOPICS))
    queued_bytes: list[int] = field(default_factory=lambda: [0] * len(topics.INPUT_TOPICS))
    released: tuple[int, int, int] = (0, 0, 0)  # (log time, rank, offset) of the latest record folded
    paused: set[int] = field(default_factory=set)  # ranks whose partition is paused
    folded_bids_to_ms: int = 0  # log time of the newest bid folded
    bids_caught_up_ms: int = 0  # when a lookup last found every bid of the partition received


class Engine:
    def __init__(
        self,
        processor: TimerProcessor,
        states: StateCache,
        delivery: Deliverer,
        probe: LogProbe,
        changelog_topic: str,
        on_changes: Callable[[list[fx.TimerChanged]], None],
        on_reconcile: Callable[[str], None],
        on_fatal: Callable[[BaseException], None],
        pause: Callable[[list[TopicPartition]], None],
        resume: Callable[[list[TopicPartition]], None],
        seek: Callable[[TopicPartition, int], Awaitable[None]],
        clock: Clock = wall_ms,
    ) -> None:
        self.processor = processor
        self.states = states
        self.delivery = delivery
        self.changelog_topic = changelog_topic
        self.on_changes = on_changes
        self.on_reconcile = on_reconcile
        self.on_fatal = on_fatal
        self.pause = pause
        self.resume = resume
        self.seek = seek
        self.clock = clock
        self.groups: dict[int, Group] = {}
        self.evidence = Evidence(probe, self, clock)
        self._newest_seen_ms = 0
        self._bids_wanted = False
        self._seeking: set[asyncio.Future[None]] = set()
        self.broken = False  # a fold failed: nothing more is folded

    # -- partitions come and go ------------------------------------------------------------

    def assign(self, partitions: Iterable[int]) -> None:
        """Partitions this worker now owns. Faust may deliver a batch of a new assignment before
        it announces the assignment, so `receive` creates a missing group too."""
        for partition in partitions:
            self._group(partition)

    def _group(self, partition: int) -> Group:
        group = self.groups.get(partition)
        if group is None:
            self.states.forget_partitions({partition})  # the store may have changed under recovery
            pipeline = Pipeline(
                partition, self.delivery, self.states, self.changelog_topic, self.clock,
                on_release=lambda: self.drain(partition), on_fatal=self.on_fatal,
            )  # fmt: skip
            group = self.groups[partition] = Group(partition, pipeline)
            self.evidence.ask()
        return group

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Drop the groups of revoked partitions. Changelog writes in flight are waited for, all
        under one deadline, so that they land before the next owner's; then everything of the
        groups is cancelled."""
        dropped = [group for p in partitions if (group := self.groups.pop(p, None)) is not None]
        for group in dropped:  # all at once, before any wait: nothing of them is acknowledged now
            HELD_INPUTS.dec(len(group.merger.drop()) + sum(len(b.records) for w in group.waiting for b in w))
            group.pipeline.begin_close()
        writing = [g.pipeline.writing for g in dropped if g.pipeline.writing is not None]
        if writing:
            await asyncio.wait(writing, timeout=REVOKE_WAIT_S)
        for group in dropped:
            await group.pipeline.close()
        self.states.forget_partitions({g.partition for g in dropped})

    # -- inputs ------------------------------------------------------------------------------

    def receive(
        self,
        topic: str,
        partition: int,
        records: Sequence[Record],
        ack: Callable[[int | None], object],
        start: int | None = None,
        end: int | None = None,
    ) -> None:
        """One fetched batch of one input partition of the current assignment (Faust's agent calls
        this; Faust skips batches fetched under an older one). `start` and `end` are the consumer's
        positions before and after it (past any transaction markers); a batch without records
        only moves them. `ack(start)` is called once the batch is folded and all it caused is in
        Kafka, with the position it was taken from.

        A partition's records are folded contiguously from where the group starts it (its
        committed offset, looked up by the evidence; batches wait until that is known):
        - A batch that begins before where the partition was received is a copy (a fetch raced
          the assignment's seek to the committed offset): the part received already is left out,
          and a copy with nothing new is never acknowledged (the first copy's acknowledgement
          covers it).
        - A batch that begins after it means the consumer moved past records the engine never
          got: Faust drops what a rebalance or its flow control interrupts, and seeks back only to
          a committed offset (none for a partition nobody committed yet). Folding on would lose
          them; the batch is left out instead and the partition is fetched again from there."""
        group = self._group(partition)
        rank = RANK[topic]
        if records:
            start = min(start if start is not None else records[0].offset, records[0].offset)
            end = max(end or 0, records[-1].offset + 1)
        if start is None or end is None:
            return  # positions unknown and no records: nothing to fold or to move
        batch = Fetched(records, ack, start, end)
        if group.next_offset[rank] is None:
            group.waiting[rank].append(batch)
            HELD_INPUTS.inc(len(records))
            self.evidence.ask()
            self._bound(group)
            return
        self._take(group, rank, batch)

    def _take(self, group: Group, rank: int, batch: Fetched) -> None:
        received = group.next_offset[rank]
        assert received is not None
        records, start, end, ack = batch.records, batch.start, batch.end, batch.ack
        if start > received:
            self._refetch(group, rank)
            return
        group.refetching.discard(rank)
        if start < received:
            if end <= received:
                return
            records = [r for r in records if r.offset >= received]
            start = received
        group.next_offset[rank] = end
        partition, topic = group.partition, topics.INPUT_TOPICS[rank]
        if not records:
            ack(start)  # nothing to fold; the commit still waits for the batches before it
            self.drain(partition)
            return
        taken = Batch(partial(ack, start), len(records))
        items = []
        size = 0
        for r in records:
            stamped = r.timestamp_type == LOG_APPEND_TIME
            # A partition's records keep their offset order in time too (see order.order_time).
            order_ms = order_time(group.last_log_ms[rank], r.timestamp, stamped)
            if stamped:
                group.last_log_ms[rank] = order_ms
                self._newest_seen_ms = max(self._newest_seen_ms, order_ms)
            msg = Message(topic, partition, r.offset, order_ms if stamped else r.timestamp, r.key, r.value, stamped)
            items.append((order_ms, r.offset, (msg, taken)))
            size += len(r.value or b"")
        group.merger.add(rank, items)
        group.queued_bytes[rank] += size
        HELD_INPUTS.inc(len(records))
        self.drain(partition)

    def _refetch(self, group: Group, rank: int) -> None:
        """Seek the partition back to where it was received (not again while that seek is under way)."""
        if rank in group.refetching:
            return
        group.refetching.add(rank)
        REFETCHES.inc()
        tp = TopicPartition(topics.INPUT_TOPICS[rank], group.partition)
        offset = group.next_offset[rank]
        assert offset is not None
        log.warning("records were skipped before the fold; fetching the partition again from %d", offset,
                    extra={"topic": tp.topic, "partition": tp.partition, "offset": offset})  # fmt: skip
        task = asyncio.ensure_future(self.seek(tp, offset))
        self._seeking.add(task)
        task.add_done_callback(partial(self._sought, group, rank))

    def check_positions(self, positions: Mapping[TopicPartition, int]) -> None:
        """The consumer's positions, looked at every second or so. A partition the consumer has
        read past what the engine received, neither having moved for STUCK_LOOKS looks, lost a
        batch on the way that no later batch reveals (it was its partition's last): fetch it
        again. (A batch only queued behind a busy fold that long costs a needless refetch.)"""
        for tp, position in positions.items():
            group, rank = self.groups.get(tp.partition), RANK.get(tp.topic)
            if group is None or rank is None:
                continue
            now = (group.next_offset[rank], position)
            received = now[0]
            still = group.looked[rank][0] == now
            looks = group.looked[rank][1] + 1 if still else 0
            if received is not None and position > received and looks >= STUCK_LOOKS:
                self._refetch(group, rank)
                looks = 0
            group.looked[rank] = (now, looks)

    def _sought(self, group: Group, rank: int, task: asyncio.Future[None]) -> None:
        # Done: a batch that begins past the partition's position from now on asks again (one
        # fetched before the seek may still come; it costs a seek more, never a record).
        self._seeking.discard(task)
        group.refetching.discard(rank)
        if not task.cancelled() and task.exception() is not None:
            # Revoked meanwhile (the next owner starts from the commit), or the consumer is stopping.
            log.warning("seeking an input partition failed", extra={"error": repr(task.exception())[:300]})

    def drain(self, partition: int) -> None:
        """Fold whatever the log's order lets out of `partition` now (synchronously)."""
        group = self.groups.get(partition)
        if group is None or self.broken:
            return
        while not (group.pipeline.held or group.pipeline.full or self.broken):
            ready = group.merger.pop_ready(MAX_ROUND_INPUTS)
            if not ready:
                break
            HELD_INPUTS.dec(len(ready))
            self._fold(group, ready)
        if group.merger.blocked_on():
            self.evidence.ask()
        self._bound(group)

    def _bound(self, group: Group) -> None:
        """Pause an input partition with too much buffered, resume it at half. A partition the
        merge waits on has nothing buffered, so it is never paused. The pause is asked again
        while the partition is over: Faust's own flow control resumes partitions when its queue
        drains, ours included."""
        for rank, name in enumerate(topics.INPUT_TOPICS):
            waiting = [r for b in group.waiting[rank] for r in b.records]  # for the ms the start is looked up
            queued = group.merger.queued(rank) + len(waiting)
            size = group.queued_bytes[rank] + sum(len(r.value or b"") for r in waiting)
            tp = TopicPartition(name, group.partition)
            if queued > MAX_QUEUED or size > MAX_QUEUED_BYTES:
                group.paused.add(rank)
                self.pause([tp])
            elif rank in group.paused and queued < MAX_QUEUED // 2 and size < MAX_QUEUED_BYTES // 2:
                group.paused.discard(rank)
                self.resume([tp])

    def _fold(self, group: Group, ready: list[tuple[Message, Batch]]) -> None:
        records: list[outputs.Record] = []
        batches: dict[Batch, int] = {}
        completions: list[TimerState] = []
        changes: list[fx.TimerChanged] = []
        per_topic: dict[str, int] = {}
        try:
            for msg, batch in ready:
                rank = RANK[msg.topic]
                group.queued_bytes[rank] -= len(msg.value or b"")
                if msg.log_append_time:
                    msg = self._after_released(group, msg, rank)
                per_topic[msg.topic] = per_topic.get(msg.topic, 0) + 1
                try:
                    outcome = self.processor.process(msg)
                except Exception as exc:  # noqa: BLE001 - a bug met this record; the DLQ keeps it
                    outcome = self.processor.internal_error(msg, exc)
                records += outcome.records
                batches[batch] = batches.get(batch, 0) + 1
                changes += outcome.changes
                completions += [c.state for c in outcome.changes if c.kind == "completed"]
                for auction_id in outcome.reconcile:
                    self.on_reconcile(auction_id)
                if rank == BIDS and msg.log_append_time:
                    group.folded_bids_to_ms = max(group.folded_bids_to_ms, msg.timestamp_ms)
            work = Round(records, self.states.take_unwritten(), batches, completions)
        except BaseException as exc:
            # Not a record's fault (those go to the DLQ above): the state is no longer known
            # good, so nothing more is folded; the worker stops and the partitions' next owner
            # folds the unacknowledged inputs again.
            self.broken = True
            log.exception("folding failed; the worker stops so that its inputs are folded again")
            self.on_fatal(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for topic, count in per_topic.items():
            EVENTS.labels(topic).inc(count)
        group.pipeline.submit(work)
        self.on_changes(changes)

    @staticmethod
    def _after_released(group: Group, msg: Message, rank: int) -> Message:
        """A record that reaches the fold after records later in the log's order was appended on
        a broker whose clock is behind the others' (the brokers' clocks must agree; see the
        README). It is folded as appended just after them, so that it is never taken for a
        record folded already: it comes late rather than never."""
        if (msg.timestamp_ms, rank, msg.offset) <= group.released:
            log.warning(
                "a record's append time is before records folded already: brokers' clocks disagree",
                extra={"topic": msg.topic, "partition": msg.partition, "offset": msg.offset,
                       "behind_ms": group.released[0] - msg.timestamp_ms},
            )  # fmt: skip
            msg = replace(msg, timestamp_ms=group.released[0] + 1)
        group.released = (msg.timestamp_ms, rank, msg.offset)
        return msg

    # -- what the evidence asks about (evidence.Partitions) ----------------------------------

    def wanted(self) -> set[TopicPartition]:
        """Partitions to look up: the ones records wait on, the ones of unknown start, and the
        bid partitions when the watermark gauge asked."""
        wanted = set()
        for g in self.groups.values():
            ranks = range(len(topics.INPUT_TOPICS)) if None in g.next_offset else g.merger.blocked_on()
            wanted |= {TopicPartition(topics.INPUT_TOPICS[r], g.partition) for r in ranks}
        if self._bids_wanted:
            self._bids_wanted = False
            wanted |= {TopicPartition(topics.BID_PLACED, p) for p in self.groups}
        return wanted

    def next_offset(self, tp: TopicPartition) -> int | None:
        group = self.groups.get(tp.partition)
        return None if group is None else group.next_offset[RANK[tp.topic]]

    def started_at(self, starts: dict[TopicPartition, int]) -> None:
        for tp, offset in starts.items():
            group = self.groups.get(tp.partition)
            rank = RANK[tp.topic]
            if group is not None and group.next_offset[rank] is None:
                group.next_offset[rank] = offset
                waiting, group.waiting[rank] = group.waiting[rank], []
                HELD_INPUTS.dec(sum(len(b.records) for b in waiting))
                for batch in waiting:
                    self._take(group, rank, batch)
                self._bound(group)

    def caught_up(self, tps: Iterable[TopicPartition], as_of_ms: int, sent_ms: int) -> None:
        touched = set()
        for tp in tps:
            group = self.groups.get(tp.partition)
            if group is None:
                continue
            rank = RANK[tp.topic]
            group.merger.caught_up(rank, as_of_ms)
            if rank == BIDS:
                group.bids_caught_up_ms = sent_ms
            touched.add(tp.partition)
        for partition in touched:
            self.drain(partition)

    def newest_seen_ms(self) -> int:
        return self._newest_seen_ms

    # -- the watermark gauge -----------------------------------------------------------------

    def watermark(self, partition: int) -> int | None:
        """Up to when every bid of `partition` has been folded: the log time of the newest folded
        bid, or, when none waits, the time a lookup last found the partition caught up."""
        group = self.groups.get(partition)
        if group is None:
            return None
        idle = group.merger.queued(BIDS) == 0 and group.bids_caught_up_ms
        return max(group.folded_bids_to_ms, group.bids_caught_up_ms if idle else 0)

    def watch_watermarks(self) -> None:
        """Look up the bid partitions' ends (the gauge's evidence when no bid is waiting)."""
        self._bids_wanted = True
        self.evidence.ask()
