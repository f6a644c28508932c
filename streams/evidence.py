"""Which idle input partitions hold nothing unseen: end-offset lookups that let the merge go on.

A partition with nothing buffered blocks the records after it until the worker knows it holds
nothing appended before them. One lookup (ListOffsets, at most every ASK_INTERVAL_S) answers
for every blocked partition at once: a partition whose next offset to read is its leader's log
end holds nothing unseen that the log took before the lookup, whether its followers have it yet
or not (streams/log_probe.py: not the high watermark, which lags the log end while followers
copy, and longer while one has stopped). The record that blocks was received before the
lookup was sent, so the broker served the lookup after stamping it; `as_of` takes the older of
the worker's clock at sending and the newest broker time received, so a worker clock running
ahead cannot release a record early. The brokers' clocks must agree (NTP).
A broker stamps a record a moment before its log end moves past it (the append in between: a
segment roll, a stall), so a lookup vouches only up to APPEND_MARGIN_MS before it was sent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Sequence
from typing import Protocol

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError

from streams.clock import Clock

log = logging.getLogger("auction_timer.evidence")
ASK_INTERVAL_S = 0.005
APPEND_MARGIN_MS = 5
RETRY_S = 0.5


class LogProbe(Protocol):
    """Where the input partitions end, and where this worker's group starts reading them."""

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...

    async def start_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]: ...


class Partitions(Protocol):
    """What the evidence is for: the engine's partitions (see streams/engine.py)."""

    def wanted(self) -> set[TopicPartition]: ...

    def next_offset(self, tp: TopicPartition) -> int | None: ...

    def started_at(self, starts: dict[TopicPartition, int]) -> None: ...

    def caught_up(self, tps: Iterable[TopicPartition], as_of_ms: int, sent_ms: int) -> None: ...

    def newest_seen_ms(self) -> int: ...


class Evidence:
    def __init__(self, probe: LogProbe, partitions: Partitions, clock: Clock) -> None:
        self.probe = probe
        self.partitions = partitions
        self.clock = clock
        self._asking: asyncio.Task[None] | None = None

    def ask(self) -> None:
        if self._asking is None:
            self._asking = asyncio.get_running_loop().create_task(self._loop())

    async def _loop(self) -> None:
        try:
            while True:
                wanted = self.partitions.wanted()
                if not wanted:
                    return
                sent_ms, newest = self.clock(), self.partitions.newest_seen_ms()
                try:
                    unknown = [tp for tp in wanted if self.partitions.next_offset(tp) is None]
                    if unknown:
                        self.partitions.started_at(await self.probe.start_offsets(unknown))
                    ends = await self.probe.end_offsets(sorted(wanted))
                except (KafkaError, OSError, TimeoutError) as exc:
                    log.warning("end-offset lookup failed; asking again", extra={"error": repr(exc)[:300]})
                    await asyncio.sleep(RETRY_S)
                    continue
                caught = []
                for tp, end in ends.items():
                    position = self.partitions.next_offset(tp)
                    if position is not None and position >= end:
                        caught.append(tp)
                # Not `newest - 1`: then a lone record would wait for a newer one forever. (With the
                # worker's clock ahead of the brokers', a record appended in the very millisecond of
                # the newest one seen, after the lookup, could sort before it: clocks must agree.)
                self.partitions.caught_up(caught, min(sent_ms - 1 - APPEND_MARGIN_MS, newest), sent_ms)
                await asyncio.sleep(ASK_INTERVAL_S)
        finally:
            self._asking = None

    def stopping(self) -> None:
        if self._asking is not None:
            self._asking.cancel()
            self._asking = None
