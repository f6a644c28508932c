"""The projection consumer: timer events from Kafka into Redis, in batches, at least once.

It has a consumer group of its own, so a Redis outage only makes it lag: it keeps
retrying the same batch with backoff and commits offsets only after Redis took the
writes. The fold never waits for it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from redis.exceptions import RedisError, ResponseError

from projections import refusals
from projections.metrics import ERRORS, LAG, WRITES
from projections.store import Projected, ProjectionStore
from streams import topics

log = logging.getLogger("auction_timer.projection")
MAX_BACKOFF_S = 2.0
# Events taken a batch: decoding them and packing their writes (about 25 µs each) runs without a
# pause in the worker's event loop, so a catch-up after an outage delays deadlines by ~5 ms, not more.
BATCH = 200


def latest_per_auction(values: list[bytes]) -> tuple[list[Projected], int]:
    """Only the highest version of each auction in a batch needs writing. Also returns the
    newest event's server time, for the lag gauge."""
    best: dict[str, Projected] = {}
    newest = 0
    for value in values:
        try:
            data = orjson.loads(value)["data"]
            item = Projected.of(data)
            version = item.version
            newest = max(newest, int(data.get("server_time_ms") or 0))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.error("skipping an unreadable timer event", extra={"value": value[:200].decode(errors="replace")})
            continue
        current = best.get(item.auction_id)
        if current is None or version > current.version:
            best[item.auction_id] = item
    return list(best.values()), newest


class ProjectionConsumer:
    def __init__(
        self, bootstrap: str, group: str, store: ProjectionStore, clock: Callable[[], int], **client_options: Any
    ) -> None:
        self.bootstrap = bootstrap
        self.client_options = client_options
        self.group = group
        self.store = store
        self.clock = clock

    async def run(self) -> None:
        """Consume forever; a Kafka failure restarts the consumer from the last commit."""
        while True:
            try:
                await self._consume()
            except KafkaError as exc:
                ERRORS.labels(type(exc).__name__).inc()
                log.warning("projection consumer failed; restarting", extra={"error": repr(exc)})
                await asyncio.sleep(MAX_BACKOFF_S)

    async def _consume(self) -> None:
        consumer = AIOKafkaConsumer(
            topics.TIMER_EVENTS,
            bootstrap_servers=self.bootstrap,
            group_id=self.group,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_poll_records=BATCH,
            **self.client_options,
        )
        await consumer.start()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=BATCH)
                if not batch:
                    continue
                items, newest = latest_per_auction([r.value for records in batch.values() for r in records if r.value])
                await self._write_until_done(items)
                await consumer.commit()
                if newest:
                    LAG.set(max(0, self.clock() - newest))
        finally:
            await consumer.stop()

    async def _write_until_done(self, items: list[Projected]) -> None:
        """Write the batch; transient errors retry it with backoff, an auction Redis refuses for
        good is reported and skipped (projections/refusals.py), so the others always get through."""
        backoff = 0.05
        while True:
            try:
                results = await self.store.write(items, "newer", self.clock())
                break
            except (RedisError, OSError) as exc:
                ERRORS.labels(type(exc).__name__).inc()
                log.warning(
                    "projection write failed; retrying",
                    extra={"error": f"{type(exc).__name__}: {exc}", "retry_in_s": backoff},
                )
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
        for item, result in zip(items, results, strict=True):
            if isinstance(result, ResponseError):
                refusals.report("projection", item.auction_id, result, log)
            else:
                WRITES.labels("applied" if result else "stale").inc()
