"""The gateway's feed: ticks and timer events from Kafka, read from the latest offset with no
consumer group (every gateway sees every message), into memory and out to subscribers.

Every record is checked against the AsyncAPI contract first (app/gateway/contract.py): one
that breaks it (or is over AUCTION_TIMER_MAX_EVENT_BYTES) is skipped, counted and logged,
and the records after it flow on. An unexpected error handling a record is logged at once
with its traceback and makes the feed not live until a record is handled cleanly again; one
anywhere else in the loop restarts the consumer.

The feed is `live` (what /readyz reports) once Kafka answers and the consumer holds a position
on every partition of both topics ("latest" is only fixed then, so anything published earlier
is not delivered), and while no error stands. When it stops being live every socket is told
the feed is interrupted (clients fall back to polling GET); when it is live again, restored.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from app.gateway import contract
from app.gateway.contract import Violation
from app.gateway.hub import Hub
from app.gateway.last_seen import LastSeen
from app.gateway.metrics import FEED_SKIPPED, FEED_UP
from streams import topics
from streams.state import LIVE

log = logging.getLogger("auction_timer.gateway.feed")
PROBE_INTERVAL_S = 1.0
STOP_TIMEOUT_S = 5.0
STATE_FIELDS_DROPPED = ("cause",)


def message_for(topic: str, data: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A WebSocket message from a tick or a timer event. `seq` is the channel's, set by the hub.
    A timer event is dated by the log (when the change happened, possibly seconds ago after a
    worker restart); clients read server_time_ms as the server's clock now, so the gateway
    stamps the message with its own clock and keeps the change's time as changed_at_ms."""
    out = {k: v for k, v in data.items() if k not in STATE_FIELDS_DROPPED and k != "seq"}
    if topic == topics.TICKS:
        out["type"] = "tick"
        return out
    out["type"] = str(data.get("kind"))
    out["changed_at_ms"] = data["server_time_ms"]
    out["server_time_ms"] = now_ms
    out["remaining_ms"] = max(0, int(data["ends_at_ms"]) - now_ms) if data["status"] in LIVE else 0
    return out


class Feed:
    def __init__(
        self,
        bootstrap: str,
        hub: Hub,
        memory: LastSeen,
        clock: Callable[[], int],
        max_record_bytes: int,
        **client_options: Any,
    ) -> None:
        self.bootstrap = bootstrap
        self.client_options = client_options
        self.hub = hub
        self.memory = memory
        self.clock = clock
        self.max_record_bytes = max_record_bytes
        self.up = False  # Kafka answers
        self.positioned = False  # the consumer holds a position on every partition
        self.failing: str | None = None  # the error of the last record, until one is handled cleanly
        self._announced = False  # what the sockets were last told (live or not)
        self._next_skip_log = 0.0

    @property
    def live(self) -> bool:
        return self.up and self.positioned and self.failing is None

    def handle(self, topic: str, partition: int, offset: int, value: bytes | None) -> int:
        """Check, remember and publish one record; returns how many sockets it was queued for."""
        try:
            data = self.accepted(topic, value)
            # An older version (ticks and events interleave) is not news.
            news = self.memory.update(data)
            delivered = self.hub.publish(data["auction_id"], message_for(topic, data, self.clock())) if news else 0
        except Violation as bad:
            self._skipped(topic, partition, offset, bad)
            return 0
        except Exception as exc:  # a bug must not stop the fan-out of every other auction
            FEED_SKIPPED.labels(topic, "internal_error").inc()
            log.exception("the feed failed on a record; skipped it", extra={"topic": topic, "partition": partition,
                                                                         "offset": offset})  # fmt: skip
            self._set(failing=repr(exc))
            return 0
        if self.failing is not None:
            self._set(failing=None)
        return delivered

    def accepted(self, topic: str, value: bytes | None) -> dict[str, Any]:
        if not value:
            raise Violation("empty", "$")
        if len(value) > self.max_record_bytes:
            raise Violation("oversized", "$")
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            raise Violation("not_json", "$") from None
        return contract.check(topic, doc)

    def _skipped(self, topic: str, partition: int, offset: int, bad: Violation) -> None:
        FEED_SKIPPED.labels(topic, bad.reason).inc()
        now = time.monotonic()
        if now >= self._next_skip_log:  # a flood of bad records is counted, and logged once a second
            self._next_skip_log = now + 1.0
            log.warning(
                "skipped a record on the feed that breaks the contract",
                extra={"topic": topic, "partition": partition, "offset": offset, "reason": bad.reason,
                       "field": bad.field},
            )  # fmt: skip

    def _set(self, **changes: Any) -> None:
        """Change the feed's state; when that changes whether it is live, tell every socket."""
        for name, value in changes.items():
            setattr(self, name, value)
        live = self.live
        FEED_UP.set(1 if live else 0)
        if live != self._announced:
            self._announced = live
            status = "restored" if live else "interrupted"
            log.warning("feed %s", status, extra={"kafka_up": self.up, "failing": self.failing})
            self.hub.broadcast({"type": "feed", "status": status, "server_time_ms": self.clock()})

    async def run(self) -> None:
        await asyncio.gather(self._consume(), self._watch_health())

    async def _consume(self) -> None:
        while True:
            consumer = AIOKafkaConsumer(
                topics.TICKS,
                topics.TIMER_EVENTS,
                bootstrap_servers=self.bootstrap,
                group_id=None,
                auto_offset_reset="latest",
                metadata_max_age_ms=5_000,
                **self.client_options,
            )
            self._set(positioned=False)
            try:
                await consumer.start()
                while True:
                    if not self.positioned:
                        self._set(positioned=await positioned(consumer))
                    batch = await consumer.getmany(timeout_ms=200, max_records=500)
                    for tp, records in batch.items():
                        for record in records:
                            if self.handle(tp.topic, tp.partition, record.offset, record.value):
                                # Let the socket writers send it before the next one is queued, so
                                # a burst in one batch does not look like a slow consumer.
                                await asyncio.sleep(0)
            except KafkaError as exc:
                log.warning("feed consumer failed; restarting", extra={"error": repr(exc)})
                await asyncio.sleep(PROBE_INTERVAL_S)
            except Exception:  # logged at once; the feed is not live until it restarts
                log.exception("feed consumer failed unexpectedly; restarting")
                await asyncio.sleep(PROBE_INTERVAL_S)
            finally:
                # Bounded: aiokafka's stop after a failed start (a topic the worker has not
                # created yet) can wait forever on its fetcher, which would freeze the feed.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await consumer.stop()

    async def _watch_health(self) -> None:
        """A metadata request every second tells whether Kafka answers."""
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2_000, **self.client_options)
        try:
            while True:
                try:
                    if not self.up:
                        await client.bootstrap()
                    await asyncio.wait_for(client.fetch_all_metadata(), 3)
                    healthy = True
                except (KafkaError, OSError, TimeoutError):
                    healthy = False
                except Exception:  # logged at once and counted as unhealthy
                    log.exception("feed health probe failed unexpectedly")
                    healthy = False
                if healthy != self.up:
                    self._set(up=healthy)
                await asyncio.sleep(PROBE_INTERVAL_S)
        finally:
            await client.close()


async def positioned(consumer: AIOKafkaConsumer) -> bool:
    """Are both topics assigned (a subscription gets all of a topic's partitions at once, when
    its metadata arrives) and is the starting offset of each partition resolved?"""
    assigned = consumer.assignment()
    if {tp.topic for tp in assigned} != {topics.TICKS, topics.TIMER_EVENTS}:
        return False
    for tp in assigned:
        await consumer.position(tp)
    return True
