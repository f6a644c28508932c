"""Reading what the service publishes, and producing what upstream would."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from streams import events, outputs
from streams.decode import FUTURE_TOLERANCE_MS
from streams.topic_admin import described_by_every_broker
from streams.topics import TIMER_EVENTS
from streams.tracing import new_traceparent
from tests.support.waiting import eventually

Doc = dict[str, Any]


@dataclass
class Seen:
    topic: str
    key: bytes | None
    doc: Doc
    received_ms: int


async def reading_from_start(bootstrap: str, topics: tuple[str, ...], **options: Any) -> AIOKafkaConsumer:
    """A started consumer of every partition of `topics`, from the earliest offset.

    It waits until every broker knows the topics (the worker creates them as it starts) and
    assigns their partitions explicitly. Subscribing instead fails when the broker answering the
    consumer's metadata request has not yet heard of a just-created topic, and aiokafka's stop
    after that failed start can hang (seen once in CI, three brokers)."""
    described = await described_by_every_broker(bootstrap, list(topics), timeout=90, **options)
    partitions = {t["topic"]: len(t["partitions"]) for t in described}
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, auto_offset_reset="earliest", metadata_max_age_ms=1000, **options
    )
    consumer.assign([TopicPartition(topic, p) for topic, n in partitions.items() for p in range(n)])
    await consumer.start()
    return consumer


async def describe_group(bootstrap: str, group: str) -> dict[str, Any]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_consumer_groups([group])
    finally:
        await admin.close()
    [described] = response.to_object()["groups"]
    return dict(described)


async def stable_members(bootstrap: str, group: str) -> int:
    """How many members the consumer group has, once a rebalance has settled (0 meanwhile)."""
    described = await describe_group(bootstrap, group)
    return len(described["members"]) if described["state"] == "Stable" else 0


async def member_ids(bootstrap: str, group: str) -> list[str]:
    """The group's members, settled or not (a static member's id starts with its instance id)."""
    return [member["member_id"] for member in (await describe_group(bootstrap, group))["members"]]


@dataclass
class TopicWatcher:
    """Consumes topics from the start into memory so tests can wait on what arrived."""

    bootstrap: str
    topics: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)  # aiokafka's: security, for a secured broker
    seen: list[Seen] = field(default_factory=list)
    _consumer: AIOKafkaConsumer | None = None
    _task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if not self.topics:  # a producer-only kafka_io
            return
        self._consumer = await reading_from_start(self.bootstrap, self.topics, **self.options)
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


async def worker_folding(producer: AIOKafkaProducer, watch: TopicWatcher, timeout: float = 120) -> None:
    """Wait until a worker folds inputs: register a throwaway auction that ends in a day and wait
    for its timer event (`watch` must watch auctions.timer.events). A test's deadlines set after
    this are counted from a working worker, not from one still starting."""
    auction_id = f"warm-up-{uuid.uuid4().hex[:8]}"
    now = time.time_ns() // 1_000_000
    policy = events.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=1_000)
    rec = outputs.input_record(
        events.AuctionStarted(auction_id, now, now + 86_400_000, policy, "tests"),
        uuid.uuid4().hex, now, new_traceparent(), "tests",
    )  # fmt: skip
    await produce(producer, rec)
    await watch.wait_for(TIMER_EVENTS, lambda d: d["data"]["auction_id"] == auction_id, timeout)


async def produce_bid_placed_at(producer: AIOKafkaProducer, auction_id: str, placed_ms: int) -> None:
    """Produce a bid placed at `placed_ms`, as soon as the decoder accepts that time: it refuses
    a bid placed more than FUTURE_TOLERANCE_MS after the log takes it (half a second of that is
    left as a margin). A test bids at the start of an auction's soft-close window this way, which
    leaves the bid the window's length, plus that lead, to reach the log before the deadline."""
    lead_ms = FUTURE_TOLERANCE_MS - 500

    async def placeable() -> bool:
        return time.time_ns() // 1_000_000 >= placed_ms - lead_ms

    await eventually(placeable, (placed_ms - time.time_ns() // 1_000_000) / 1000 + 10, "the bid's time")
    payload = events.BidPlaced(auction_id, f"b-{uuid.uuid4().hex[:8]}", "bidder-1", "10", placed_ms)
    now = time.time_ns() // 1_000_000
    await produce(producer, outputs.input_record(payload, uuid.uuid4().hex, now, new_traceparent(), "tests"))
