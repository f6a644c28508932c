"""What the gateway writes to Kafka: audit entries and analytics events of client syncs (its
principal may write nothing else: README, Security).

Sends never hold up a request: each is a task with a deadline, the number in flight is
bounded, and a failure is counted and logged (the drift is still in the metrics)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from prometheus_client import Counter

from streams.delivery import Delivery
from streams.outputs import Record

log = logging.getLogger("auction_timer.gateway.outbox")
SENDS = Counter("auctions_gateway_kafka_sends_total", "Gateway writes to Kafka by result", ["topic", "result"])
MAX_IN_FLIGHT = 1_000
SEND_TIMEOUT_S = 10.0


class Outbox:
    def __init__(self, bootstrap: str, **client_options: Any) -> None:
        self._producer = Delivery(bootstrap, linger_ms=0, request_timeout_ms=5_000, **client_options)
        self._pending: set[asyncio.Task[None]] = set()

    def send(self, record: Record) -> None:
        if len(self._pending) >= MAX_IN_FLIGHT:
            SENDS.labels(record.topic, "dropped").inc()
            log.error("gateway outbox full; record dropped", extra={"topic": record.topic})
            return
        task = asyncio.get_running_loop().create_task(self._send(record))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _send(self, record: Record) -> None:
        try:
            producer = await asyncio.wait_for(self._producer.producer(), SEND_TIMEOUT_S)
            await asyncio.wait_for(producer.send_and_wait(record.topic, record.value, key=record.key), SEND_TIMEOUT_S)
            SENDS.labels(record.topic, "ok").inc()
        except Exception as exc:  # noqa: BLE001 - counted and logged; requests never fail on it
            SENDS.labels(record.topic, "failed").inc()
            log.warning("gateway could not write to Kafka", extra={"topic": record.topic, "error": repr(exc)})

    async def flushed(self, timeout_s: float = 5) -> None:
        """Wait until every record handed to `send` so far was written or given up on."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)

    async def close(self) -> None:
        await self.flushed()
        await self._producer.close()
