"""A Kafka producer of our own (besides Faust's), started on first use inside the running loop."""

from __future__ import annotations

import asyncio
from typing import Any

from aiokafka import AIOKafkaProducer

from streams.outputs import Record


class LazyProducer:
    """acks=all with idempotence, like every producer of this service."""

    def __init__(
        self, bootstrap: str, linger_ms: int = 0, request_timeout_ms: int = 40_000, **client_options: Any
    ) -> None:
        self._options: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "acks": "all",
            "enable_idempotence": True,
            "linger_ms": linger_ms,
            "max_batch_size": 256 * 1024,
            "request_timeout_ms": request_timeout_ms,
            **client_options,
        }
        self._producer: AIOKafkaProducer | None = None
        self._starting = asyncio.Lock()

    async def get(self) -> AIOKafkaProducer:
        if self._producer is None:
            async with self._starting:
                if self._producer is None:
                    producer = AIOKafkaProducer(**self._options)
                    await producer.start()
                    self._producer = producer
        return self._producer

    async def send(self, record: Record) -> asyncio.Future[Any]:
        """Queue the record; returns the delivery future without waiting for it."""
        future: asyncio.Future[Any] = await (await self.get()).send(record.topic, record.value, key=record.key)
        return future

    async def close(self) -> None:
        if self._producer is not None:
            await self._producer.stop()
