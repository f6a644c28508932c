"""Load for the event-time tests: ordinary bids at the producer's full speed, and last-second
bids sent at chosen wall times whose broker timestamps (LogAppendTime) are kept."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer

from streams import events as ev
from tests.support.events import now_ms, record


@dataclass
class Snipe:
    """A last-second bid: placed at `placed_ms`, and when the log took it (from Kafka's ack)."""

    auction_id: str
    placed_ms: int
    log_ms: int = 0


@dataclass
class Storm:
    """Ordinary bids (outside every soft-close window) on `auctions`, as fast as Kafka takes them."""

    producer: AIOKafkaProducer
    auctions: list[str]
    sent: int = 0
    _ids: itertools.count[int] = field(default_factory=itertools.count)

    async def run(self, limit: int) -> None:
        while self.sent < limit:
            futures = []
            for _ in range(min(500, limit - self.sent)):
                n = next(self._ids)
                rec = record(ev.BidPlaced(self.auctions[n % len(self.auctions)], f"storm-{n}", "u", "1", now_ms()))
                futures.append(await self.producer.send(rec.topic, rec.value, key=rec.key))
                self.sent += 1
            await asyncio.gather(*futures)


@contextlib.asynccontextmanager
async def storming(producer: AIOKafkaProducer, auctions: list[str], limit: int) -> AsyncIterator[Storm]:
    storm = Storm(producer, auctions)
    task = asyncio.create_task(storm.run(limit))
    try:
        yield storm
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def snipe(producer: AIOKafkaProducer, target: Snipe, send_at_ms: int) -> Snipe:
    """Send `target`'s bid at wall time `send_at_ms`; record when the log took it."""
    await asyncio.sleep(max(0.0, (send_at_ms - now_ms()) / 1000))  # the load's schedule, not a sync
    rec = record(ev.BidPlaced(target.auction_id, f"snipe-{target.auction_id}", "sniper", "99", target.placed_ms))
    metadata = await producer.send_and_wait(rec.topic, rec.value, key=rec.key)
    target.log_ms = metadata.timestamp
    return target
