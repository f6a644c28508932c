"""The gateway's feed: ticks and timer events from Kafka, read from the latest offset with no
consumer group (every gateway sees every message), into memory and out to subscribers.

When Kafka stops answering, every socket is told the feed is interrupted (clients fall
back to polling GET); when it answers again they are told it is restored. The feed is `live`
(what /readyz reports) once Kafka answers and the consumer holds a position on every partition
of both topics: "latest" is only fixed then, so anything published earlier is not delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError

from app.gateway.hub import Hub
from app.gateway.last_seen import LastSeen
from app.gateway.metrics import FEED_UP
from streams import topics

log = logging.getLogger("auction_timer.gateway.feed")
PROBE_INTERVAL_S = 1.0
STOP_TIMEOUT_S = 5.0
STATE_FIELDS_DROPPED = ("cause",)


def message_for(topic: str, data: dict[str, Any]) -> dict[str, Any]:
    """A WebSocket message from a tick or a timer event. `seq` is the channel's, set by the hub."""
    kind = "tick" if topic == topics.TICKS else str(data.get("kind"))
    out = {k: v for k, v in data.items() if k not in STATE_FIELDS_DROPPED and k != "seq"}
    out["type"] = kind
    return out


class Feed:
    def __init__(self, bootstrap: str, hub: Hub, memory: LastSeen, clock: Callable[[], int]) -> None:
        self.bootstrap = bootstrap
        self.hub = hub
        self.memory = memory
        self.clock = clock
        self.up = False
        self.positioned = False

    @property
    def live(self) -> bool:
        return self.up and self.positioned

    def handle(self, topic: str, value: bytes) -> int:
        """Remember and publish one message; returns how many sockets it was queued for."""
        try:
            data = orjson.loads(value)["data"]
            auction_id = data["auction_id"]
            int(data["version"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.error("unreadable message on the feed", extra={"topic": topic})
            return 0
        if self.memory.update(data):  # an older version (ticks and events interleave) is not news
            return self.hub.publish(auction_id, message_for(topic, data))
        return 0

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
            )
            self.positioned = False
            try:
                await consumer.start()
                while True:
                    if not self.positioned:
                        self.positioned = await positioned(consumer)
                    batch = await consumer.getmany(timeout_ms=200, max_records=500)
                    for tp, records in batch.items():
                        for record in records:
                            if record.value is not None and self.handle(tp.topic, record.value):
                                # Let the socket writers send it before the next one is queued, so
                                # a burst in one batch does not look like a slow consumer.
                                await asyncio.sleep(0)
            except KafkaError as exc:
                log.warning("feed consumer failed; restarting", extra={"error": repr(exc)})
                await asyncio.sleep(PROBE_INTERVAL_S)
            finally:
                # Bounded: aiokafka's stop after a failed start (a topic the worker has not
                # created yet) can wait forever on its fetcher, which would freeze the feed.
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(STOP_TIMEOUT_S):
                        await consumer.stop()

    async def _watch_health(self) -> None:
        """A metadata request every second tells whether Kafka answers; flips are broadcast."""
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2_000)
        try:
            while True:
                try:
                    if not self.up:
                        await client.bootstrap()
                    await asyncio.wait_for(client.fetch_all_metadata(), 3)
                    healthy = True
                except (KafkaError, OSError, TimeoutError):
                    healthy = False
                if healthy != self.up:
                    self.up = healthy
                    FEED_UP.set(1 if healthy else 0)
                    status = "restored" if healthy else "interrupted"
                    log.warning("feed %s", status)
                    self.hub.broadcast({"type": "feed", "status": status, "server_time_ms": self.clock()})
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
