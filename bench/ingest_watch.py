"""Watching one ingest contender from outside, at the broker: when its consumer group has formed,
when it starts consuming, when it has committed the end of every input partition, how many
records its output topics have gained, and the CPU it and the broker used in between."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from bench.common import cpu_ms, machine_busy_ms
from streams.topic_admin import partition_counts

POLL_S = 0.1  # the resolution of the start and end times (each poll is a request or two)


@dataclass
class Sample:
    at: float  # time.monotonic()
    cpu_ms: float  # the contender's
    broker_cpu_ms: float
    machine_busy_ms: float  # every process's, every core

    @classmethod
    def take(cls, pid: int, broker_pid: int) -> Sample:
        return cls(time.monotonic(), cpu_ms(pid), cpu_ms(broker_pid), machine_busy_ms())


@dataclass
class Window:
    """From the group's forming (the contender may fetch from then on: what it does before its
    first output, it does for the input) until the end is committed and the outputs are in."""

    started: Sample  # the consumer group formed
    first_output_at: float  # the first output record or committed offset appeared (time.monotonic())
    committed_at: float  # the group committed the end of every input partition
    ended: Sample  # ... and the outputs had all arrived
    outputs: dict[str, int]  # records each output topic gained


class Watch:
    def __init__(
        self, bootstrap: str, group: str, inputs_end: dict[TopicPartition, int], owed: list[str], extra: list[str]
    ) -> None:
        """Counts the topics `owed` (the ledger's) and `extra` (shown, not owed)."""
        self.bootstrap, self.group, self.inputs_end = bootstrap, group, inputs_end
        self.owed, self.outputs = owed, [*owed, *extra]
        self.admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        self.consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self.base: dict[TopicPartition, int] = {}

    async def __aenter__(self) -> Watch:
        await self.admin.start()
        await self.consumer.start()
        self.base = await self.produced()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()
        await self.admin.close()

    async def produced(self) -> dict[TopicPartition, int]:
        """Each output partition's end. The partitions are looked up every time: metadata may
        not list every partition of a topic created moments before (a partition left out is a
        count that falls short, and a window that waits out its timeout)."""
        counts = await partition_counts(self.bootstrap, self.outputs)
        tps = [TopicPartition(t, p) for t in self.outputs for p in range(counts.get(t, 0))]
        ends: dict[TopicPartition, int] = await self.consumer.end_offsets(tps) if tps else {}
        return ends

    async def gained(self) -> dict[str, int]:
        totals = dict.fromkeys(self.outputs, 0)
        for tp, end in (await self.produced()).items():
            totals[tp.topic] += end - self.base.get(tp, 0)
        return totals

    async def formed(self) -> bool:
        try:
            [response] = await self.admin.describe_consumer_groups([self.group])
        except KafkaError:  # the group's coordinator is not known yet (the offsets topic is being made)
            return False
        [group] = response.to_object()["groups"]
        return bool(group["state"] == "Stable" and group["members"])

    async def committed(self) -> dict[TopicPartition, int]:
        try:
            offsets = await self.admin.list_consumer_group_offsets(self.group, partitions=list(self.inputs_end))
        except KafkaError:  # no coordinator for the group yet
            return {}
        return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}

    async def committed_to_end(self) -> bool:
        committed = await self.committed()
        return all(end == 0 or committed.get(tp, 0) >= end for tp, end in self.inputs_end.items())

    async def progressed(self) -> bool:
        """Has the contender shown that it consumes: an output record, or a committed offset?"""
        return any((await self.gained()).values()) or any((await self.committed()).values())

    async def run(
        self, pid: int, broker_pid: int, owed: int, alive: Callable[[], bool], on_start: Callable[[], None]
    ) -> Window:
        """From the contender's group forming until the end is committed and `owed` output
        records arrived; also when its first sign of consumption came (its first output record,
        or for the contender without outputs its first commit)."""
        await until(self.formed, 180, "the consumer group to form", alive)
        started = Sample.take(pid, broker_pid)
        on_start()
        await until(self.progressed, 180, "a first output record or committed offset", alive)
        first_output_at = time.monotonic()
        await until(self.committed_to_end, 1_200, "the end of the input to be committed", alive)
        committed_at = time.monotonic()
        with contextlib.suppress(TimeoutError):  # reported: the outputs fall short of what is owed
            await until(lambda: self._all_out(owed), 30, f"{owed} output records", alive)
        return Window(started, first_output_at, committed_at, Sample.take(pid, broker_pid), await self.gained())

    async def _all_out(self, owed: int) -> bool:
        gained = await self.gained()
        return sum(gained[t] for t in self.owed) >= owed


async def until(check: Callable[[], Awaitable[bool]], timeout: float, what: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        if not alive():
            raise RuntimeError(f"the contender died while waiting for {what}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} after {timeout:.0f} s")
        await asyncio.sleep(POLL_S)


async def input_ends(bootstrap: str, names: tuple[str, ...]) -> dict[TopicPartition, int]:
    counts = await partition_counts(bootstrap, list(names))
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        ends: dict[TopicPartition, int] = await consumer.end_offsets(
            [TopicPartition(t, p) for t in names for p in range(counts[t])]
        )
        return ends
    finally:
        await consumer.stop()
