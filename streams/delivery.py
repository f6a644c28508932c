"""Sending records to Kafka and knowing they arrived: acks=all, idempotence, every result checked.

`deliver` returns only once Kafka has acknowledged every record, retrying failures with
backoff; it never gives up on its own (what it carries is owed), so the input that caused
the records stays unacknowledged meanwhile and is never committed past. Failures are
counted and logged, transient ones (a leader moving, too few in-sync replicas, a broker away)
apart from permanent ones (a record too large, no permission) that need an operator.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    ClusterAuthorizationFailedError,
    InvalidProducerEpoch,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    UnknownProducerId,
    UnsupportedVersionError,
)
from aiokafka.structs import RecordMetadata

from streams.metrics import DELIVERY_FAILURES
from streams.outputs import Record

log = logging.getLogger("auction_timer.delivery")
PERMANENT = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    TopicAuthorizationFailedError,
    ClusterAuthorizationFailedError,
    InvalidTopicError,
    UnsupportedVersionError,
)
# What leaves an idempotent producer's sequence numbers unusable: only a new producer goes on.
POISONED = (OutOfOrderSequenceNumber, UnknownProducerId, InvalidProducerEpoch, ProducerFenced)
RETRY_FIRST_S = 0.2


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to deliver; a None value is a tombstone (the table's changelog only)."""

    topic: str
    key: bytes
    value: bytes | None
    partition: int | None = None

    @classmethod
    def of(cls, record: Record) -> Outgoing:
        return cls(record.topic, record.key, record.value)


RETRY_MAX_S = 15.0


class Delivery:
    """One idempotent producer, started lazily in the running loop and replaced only when an error
    left its sequence numbers unusable (a timeout or a refused record does not)."""

    def __init__(self, bootstrap: str, linger_ms: int = 5, **client_options: Any) -> None:
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": 256 * 1024,
            "request_timeout_ms": 30_000,
            **client_options,
        }
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._starting:
                if self._producer is None:
                    producer = AIOKafkaProducer(**self._options)
                    await producer.start()
                    self._producer = producer
        return self._producer

    async def send(self, record: Record) -> asyncio.Future[RecordMetadata]:
        """Queue one record; the future resolves when Kafka acknowledged it (or fails)."""
        return await self._send(await self.producer(), Outgoing(record.topic, record.key, record.value))

    @staticmethod
    async def _send(producer: AIOKafkaProducer, out: Outgoing) -> asyncio.Future[RecordMetadata]:
        future: asyncio.Future[RecordMetadata] = await producer.send(
            out.topic, out.value, key=out.key, partition=out.partition
        )
        return future

    async def deliver(self, records: Sequence[Outgoing]) -> list[RecordMetadata]:
        """Send the records and wait until Kafka has every one, however long that takes."""
        results: list[RecordMetadata | None] = [None] * len(records)
        todo = list(range(len(records)))
        delay = RETRY_FIRST_S
        while todo:
            failed: list[int] = []
            futures: list[tuple[int, asyncio.Future[RecordMetadata]]] = []
            broken = False
            try:
                producer = await self.producer()  # starting one fails too while Kafka is away
                for index in todo:
                    futures.append((index, await self._send(producer, records[index])))
            except KafkaError as exc:
                self._failed(exc, records[todo[len(futures)]].topic)
                failed = todo[len(futures) :]
            for index, future in futures:
                try:
                    results[index] = await future
                except KafkaError as exc:
                    self._failed(exc, records[index].topic)
                    failed.append(index)
                    broken = broken or isinstance(exc, POISONED)
            if failed:
                if broken:
                    await self._reset(producer)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_S)
            todo = sorted(failed)
        return [r for r in results if r is not None]

    def _failed(self, exc: KafkaError, topic: str) -> None:
        kind = "permanent" if isinstance(exc, PERMANENT) else "transient"
        DELIVERY_FAILURES.labels(topic, kind).inc()
        log_at = log.error if kind == "permanent" else log.warning
        log_at(
            "a record was not delivered; holding its input and retrying",
            extra={"topic": topic, "error": repr(exc)[:300], "kind": kind},
        )

    async def _reset(self, failed: AIOKafkaProducer) -> None:
        """Replace the producer that failed (unless another delivery already did)."""
        current = self._producer
        if current is None or current is not failed:
            return
        self._producer = None
        with contextlib.suppress(Exception):
            async with asyncio.timeout(5):
                await failed.stop()

    async def close(self) -> None:
        producer = self._producer
        if producer is not None:
            await self._reset(producer)
