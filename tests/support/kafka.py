"""Reading what the service publishes, and producing what upstream would."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from streams import outputs
from streams.topic_admin import partition_counts
from tests.support.waiting import eventually

Doc = dict[str, Any]


@dataclass
class Seen:
    topic: str
    key: bytes | None
    doc: Doc
    received_ms: int


@dataclass
class TopicWatcher:
    """Consumes topics from the start into memory so tests can wait on what arrived."""

    bootstrap: str
    topics: tuple[str, ...]
    seen: list[Seen] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Subscribing to a topic the worker has not created yet fails (or misses partitions
        # until the next metadata refresh): wait until every watched topic exists.
        async def all_exist() -> bool:
            return set(self.topics) <= set(await partition_counts(self.bootstrap, list(self.topics)))

        if self.topics:
            await eventually(all_exist, 90, f"topics {', '.join(self.topics)} to exist")
        self._consumer = AIOKafkaConsumer(
            *self.topics, bootstrap_servers=self.bootstrap, auto_offset_reset="earliest", metadata_max_age_ms=1000
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        assert self._consumer is not None
        while True:
            batch = await self._consumer.getmany(timeout_ms=200)
            now = time.time_ns() // 1_000_000
            for records in batch.values():
                for r in records:
                    if r.value is not None:
                        self.seen.append(Seen(r.topic, r.key, orjson.loads(r.value), now))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._consumer is not None:
            await self._consumer.stop()

    def docs(self, topic: str, where: Callable[[Doc], bool] = lambda _: True) -> list[Doc]:
        return [s.doc for s in self.seen if s.topic == topic and where(s.doc)]

    def entries(self, topic: str, where: Callable[[Doc], bool] = lambda _: True) -> list[Seen]:
        return [s for s in self.seen if s.topic == topic and where(s.doc)]

    async def wait_for(self, topic: str, where: Callable[[Doc], bool], timeout: float, count: int = 1) -> list[Doc]:
        async def probe() -> list[Doc]:
            found = self.docs(topic, where)
            return found if len(found) >= count else []

        return await eventually(probe, timeout, f"{count} message(s) on {topic}")


async def produce(producer: AIOKafkaProducer, *records: outputs.Record) -> None:
    for rec in records:
        await producer.send_and_wait(rec.topic, rec.value, key=rec.key)


@contextlib.asynccontextmanager
async def kafka_io(bootstrap: str, *watch: str):
    """A producer and a watcher of `watch`, both cleaned up."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    watcher = TopicWatcher(bootstrap, watch)
    await producer.start()
    try:
        await watcher.start()
        yield producer, watcher
    finally:
        await watcher.stop()
        await producer.stop()
