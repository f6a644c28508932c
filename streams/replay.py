"""Replay: read the input topics over a range and run the worker's own processor and fold.

Partition p of the four input topics is merged exactly as the live worker merges it (the
same `Merger`: broker append time, then topic rank, each partition in offset order), and
the fold decides only by the log's clock, so a replay of the same log reaches the same
states and the same decisions as the worker did, whatever order the worker fetched in.
Validation and the DLQ decisions are the worker's too (its TimerProcessor over a dict).
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams import topics
from streams.errors import ReplayError
from streams.fold import NO_LATENESS, Rules
from streams.log_range import read_range
from streams.message import LOG_APPEND_TIME, Message
from streams.order import Merger, order_time
from streams.processor import TimerProcessor
from streams.state import Expired, TimerState
from streams.topic_admin import partition_counts

TOPIC_ORDER = {name: i for i, name in enumerate(topics.INPUT_TOPICS)}


@dataclass(frozen=True)
class Window:
    """Where to start (`earliest`, an offset for every partition, a time, or `offsets`: given
    per partition, as after a changelog snapshot) and to stop (`latest`, meaning the end offsets
    when the replay starts, or a time). A window reaching back past what the topics still hold
    (retention deleted the oldest records) is refused, never silently shortened."""

    start: str = "earliest"
    end: str = "latest"
    offsets: dict[TopicPartition, int] | None = None

    def start_time_ms(self) -> int | None:
        if self.offsets is not None or self.start == "earliest" or self.start.isdigit():
            return None
        return parse_iso_ms(self.start, "--from")

    def end_time_ms(self) -> int | None:
        return None if self.end == "latest" else parse_iso_ms(self.end, "--to")


def parse_iso_ms(value: str, option: str) -> int:
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise ReplayError(
            f"{option} {value!r} is not earliest/latest, an offset, or an ISO time like 2026-11-30T10:00:00Z"
        ) from None
    if parsed.tzinfo is None:
        raise ReplayError(f"{option} {value!r} needs a time zone (for example a trailing Z)")
    return int(parsed.timestamp() * 1000)


@dataclass
class Progress:
    """Events per second on a terminal; silent otherwise."""

    out: TextIO = sys.stderr
    every_s: float = 0.2
    count: int = 0
    started: float = field(default_factory=time.monotonic)
    _shown: float = 0.0

    def add(self, n: int, total: int) -> None:
        self.count += n
        now = time.monotonic()
        if self.out.isatty() and now - self._shown >= self.every_s:
            self._shown = now
            rate = self.count / max(1e-6, now - self.started)
            done = 40 * self.count // max(1, total)
            self.out.write(f"\r[{'#' * done}{'.' * (40 - done)}] {self.count}/{total} events {rate:,.0f}/s")
            self.out.flush()

    def finish(self) -> None:
        if self.out.isatty():
            self.out.write("\n")


async def read_inputs(
    bootstrap: str, window: Window, auctions: set[str] | None, progress: Progress, **client_options: Any
) -> tuple[list[Message], int]:
    """Every input record in the window (only `auctions` when given); and the partition count."""
    try:
        counts = await partition_counts(bootstrap, list(topics.INPUT_TOPICS), **client_options)
    except KafkaConnectionError as exc:
        raise ReplayError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    missing = [t for t in topics.INPUT_TOPICS if t not in counts]
    if missing:
        raise ReplayError(f"topic {missing[0]} does not exist on {bootstrap}; is this the auction timer's cluster?")
    tps = [TopicPartition(t, p) for t in topics.INPUT_TOPICS for p in range(counts[t])]
    partitions = counts[topics.BID_PLACED]
    # Committed records only, as the worker reads them (streams/faust_batches.py: CommittedReads).
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        enable_auto_commit=False,
        request_timeout_ms=10_000,
        isolation_level="read_committed",
        **client_options,
    )
    await consumer.start()
    try:
        consumer.assign(tps)
        starts, ends = await _bounds(consumer, tps, window)
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        records: list[Message] = []
        async for tp, got in read_range(consumer, starts, ends):
            for r in got:
                if auctions is None or (r.key is not None and r.key.decode(errors="replace") in auctions):
                    records.append(
                        Message(
                            tp.topic,
                            tp.partition,
                            r.offset,
                            r.timestamp,
                            r.key,
                            r.value,
                            r.timestamp_type == LOG_APPEND_TIME,
                        )
                    )
            progress.add(len(got), total)
        progress.finish()
        if total == 0 and window.offsets is None:
            raise ReplayError(f"no input events between {window.start} and {window.end}")
        return records, partitions
    except (KafkaError, TimeoutError) as exc:
        raise ReplayError(f"reading from Kafka at {bootstrap} failed: {exc}") from None
    finally:
        await consumer.stop()


async def _bounds(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], window: Window
) -> tuple[dict[TopicPartition, int], dict[TopicPartition, int]]:
    beginning = await consumer.beginning_offsets(tps)
    latest = await consumer.end_offsets(tps)
    starts = dict.fromkeys(tps, 0)  # earliest: the first record ever written
    if window.offsets is not None:
        starts = {tp: window.offsets.get(tp, beginning[tp]) for tp in tps}
    elif window.start.isdigit():
        starts = {tp: min(int(window.start), latest[tp]) for tp in tps}
    elif (start_ms := window.start_time_ms()) is not None:
        found = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
        # Landing on the oldest record still held of a truncated partition: what came before
        # it (and may be in the window) is gone.
        starts = {tp: found[tp].offset if found[tp] else latest[tp] for tp in tps}
        starts = {tp: offset - 1 if offset == beginning[tp] > 0 else offset for tp, offset in starts.items()}
    if lost := {tp: beginning[tp] for tp in tps if starts[tp] < beginning[tp]}:
        tp, oldest = next(iter(lost.items()))
        raise ReplayError(
            f"the window starts before what the input topics still hold: retention deleted {tp.topic}[{tp.partition}]"
            f" before offset {oldest} (and {len(lost) - 1} more partition(s)); replay --from-changelog, or a later"
            " --from, or keep inputs longer (AUCTION_TIMER_INPUT_RETENTION_MS)"
        )
    ends = dict(latest)
    if (end_ms := window.end_time_ms()) is not None:
        found = await consumer.offsets_for_times(dict.fromkeys(tps, end_ms + 1))
        ends = {tp: found[tp].offset if found[tp] else latest[tp] for tp in tps}
    return starts, ends


@dataclass
class Replayed:
    states: dict[str, TimerState]
    timeline: list[dict[str, Any]]
    rejected: Counter[str]


@dataclass
class MemoryStates:
    """The table of a replay: plain decoded states, and markers of removed auctions."""

    states: dict[bytes, TimerState] = field(default_factory=dict)
    markers: dict[bytes, Expired] = field(default_factory=dict)

    def get(self, key: bytes) -> TimerState | None:
        return self.states.get(key)

    def put(self, key: bytes, state: TimerState) -> None:
        self.states[key] = state

    def expired(self, key: bytes) -> Expired | None:
        return self.markers.get(key)

    def forget(self, key: bytes, marker: Expired) -> None:
        self.states.pop(key, None)
        self.markers[key] = marker

    def drop_expired(self, key: bytes) -> None:
        self.markers.pop(key, None)


async def committed_offsets(bootstrap: str, group: str, **client_options: Any) -> dict[TopicPartition, int]:
    """Where the worker's consumer group stands on each input partition (what the changelog reflects)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **client_options)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {tp: meta.offset for tp, meta in offsets.items() if tp.topic in TOPIC_ORDER and meta.offset >= 0}


def in_log_order(records: list[Message]) -> list[Message]:
    """Every partition number's records, merged as the live worker merges them."""
    mergers: dict[int, Merger[Message]] = {}
    last_ms: dict[tuple[str, int], int] = {}
    for rec in records:  # read per partition in offset order
        merger = mergers.setdefault(rec.partition, Merger(len(topics.INPUT_TOPICS)))
        tp = (rec.topic, rec.partition)
        order_ms = order_time(last_ms.get(tp, 0), rec.timestamp_ms, rec.log_append_time)
        if rec.log_append_time:
            last_ms[tp] = order_ms
            if order_ms != rec.timestamp_ms:
                rec = replace(rec, timestamp_ms=order_ms)
        merger.add(TOPIC_ORDER[rec.topic], [(order_ms, rec.offset, rec)])
    ordered: list[Message] = []
    for partition in sorted(mergers):
        mergers[partition].everything_seen()
        ordered += mergers[partition].pop_ready()
    return ordered


def reprocess(
    records: list[Message],
    partitions: int,
    max_event_bytes: int,
    rules: Rules = NO_LATENESS,
    table: MemoryStates | None = None,
) -> Replayed:
    """Run the worker's processor over the records, in the order the worker folds them, from
    `table` (a changelog snapshot) or from nothing."""
    logging.getLogger("auction_timer.processor").setLevel(logging.ERROR)  # rejections are counted instead
    table = table if table is not None else MemoryStates()
    processor = TimerProcessor(table, partitions, max_event_bytes, rules)
    timeline: list[dict[str, Any]] = []
    rejected: Counter[str] = Counter()
    for rec in in_log_order(records):
        outcome = processor.process(rec)
        rejected.update(outcome.rejected)
        for change in outcome.changes:
            s = change.state
            timeline.append({
                "auction_id": s.auction_id, "version": s.version, "kind": change.kind, "status": s.status,
                "ends_at_ms": s.ends_at_ms, "at_ms": s.updated_at_ms,
                "cause": {"id": change.cause_id, "type": change.cause_type,
                          "topic": rec.topic, "partition": rec.partition, "offset": rec.offset},
                "trace_id": s.trace_id,
            })  # fmt: skip
    states = {key.decode(): state for key, state in table.states.items()}
    return Replayed(states, timeline, rejected)
