"""Replay: read the input topics over a range, in log order, and run the worker's own fold.

Each auction's events are merged across the four input topics by record timestamp (then
topic, partition, offset), so a replay meets them in the order the live worker met them
unless two of an auction's inputs raced inside the worker's fetch window. The outer layer
is the worker's TimerProcessor over a plain dict, so validation and the DLQ decisions
are the same as live.
"""

from __future__ import annotations

import logging
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TextIO

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError, KafkaError

from streams import topics
from streams.errors import ReplayError
from streams.log_range import read_range
from streams.processor import Message, TimerProcessor
from streams.state import TimerState, decode_state
from streams.topic_admin import partition_counts

TOPIC_ORDER = {name: i for i, name in enumerate(topics.INPUT_TOPICS)}


@dataclass(frozen=True)
class Window:
    """Where to start (`earliest`, an offset for every partition, or a time) and to stop
    (`latest`, meaning the end offsets when the replay starts, or a time)."""

    start: str = "earliest"
    end: str = "latest"

    def start_time_ms(self) -> int | None:
        return None if self.start == "earliest" or self.start.isdigit() else parse_iso_ms(self.start, "--from")

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


@dataclass(frozen=True, slots=True)
class Input:
    topic: str
    partition: int
    offset: int
    timestamp: int
    key: bytes | None
    value: bytes | None

    @property
    def order(self) -> tuple[int, int, int, int]:
        return (self.timestamp, TOPIC_ORDER[self.topic], self.partition, self.offset)


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
    bootstrap: str, window: Window, auctions: set[str] | None, progress: Progress
) -> tuple[list[Input], int]:
    """Every input record in the window (only `auctions` when given); and the partition count."""
    try:
        counts = await partition_counts(bootstrap, list(topics.INPUT_TOPICS))
    except KafkaConnectionError as exc:
        raise ReplayError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
    missing = [t for t in topics.INPUT_TOPICS if t not in counts]
    if missing:
        raise ReplayError(f"topic {missing[0]} does not exist on {bootstrap}; is this the auction timer's cluster?")
    tps = [TopicPartition(t, p) for t in topics.INPUT_TOPICS for p in range(counts[t])]
    partitions = counts[topics.BID_PLACED]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, request_timeout_ms=10_000)
    await consumer.start()
    try:
        consumer.assign(tps)
        starts, ends = await _bounds(consumer, tps, window)
        total = sum(max(0, ends[tp] - starts[tp]) for tp in tps)
        records: list[Input] = []
        async for tp, got in read_range(consumer, starts, ends):
            for r in got:
                if auctions is None or (r.key is not None and r.key.decode(errors="replace") in auctions):
                    records.append(Input(tp.topic, tp.partition, r.offset, r.timestamp, r.key, r.value))
            progress.add(len(got), total)
        progress.finish()
        if total == 0:
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
    starts = dict(beginning)
    if window.start.isdigit():
        starts = {tp: max(beginning[tp], min(int(window.start), latest[tp])) for tp in tps}
    elif (start_ms := window.start_time_ms()) is not None:
        found = await consumer.offsets_for_times(dict.fromkeys(tps, start_ms))
        starts = {tp: found[tp].offset if found[tp] else latest[tp] for tp in tps}
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


def reprocess(
    records: list[Input], partitions: int, max_event_bytes: int, clock: Callable[[], int] = lambda: 0
) -> Replayed:
    """Run the worker's processor over the records, each auction's in log order."""
    logging.getLogger("auction_timer.processor").setLevel(logging.ERROR)  # rejections are counted instead
    table: dict[bytes, bytes] = {}
    processor = TimerProcessor(table, partitions, max_event_bytes, clock)
    timeline: list[dict[str, Any]] = []
    rejected: Counter[str] = Counter()
    for rec in sorted(records, key=lambda r: (r.key or b"", r.order)):
        outcome = processor.process(Message(rec.topic, rec.partition, rec.offset, rec.key, rec.value))
        rejected.update(outcome.rejected)
        for change in outcome.changes:
            if change.redelivery:
                continue
            s = change.state
            timeline.append({
                "auction_id": s.auction_id, "version": s.version, "kind": change.kind, "status": s.status,
                "ends_at_ms": s.ends_at_ms, "at_ms": s.updated_at_ms,
                "cause": {"id": change.cause_id, "type": change.cause_type,
                          "topic": rec.topic, "partition": rec.partition, "offset": rec.offset},
                "trace_id": s.trace_id,
            })  # fmt: skip
    states = {key.decode(): decode_state(value) for key, value in table.items()}
    return Replayed(states, timeline, rejected)
