"""The ingest benchmark's input, produced once before any contender runs: 1,050 registrations,
then BIDS bids, keyed by auction, on the contract's input topics (8 partitions, stamped by the
broker). Every event id is unique. 95% of the bids are ordinary (the auction ends in an hour,
far from its 60 s soft-close window: nothing changes); every 20th lands on one of 50 hot
auctions whose window is longer than the auction, and each extends it (a table write and three
records: the timer event, its audit entry and its analytics event).

Registrations start a second in the past, so each is `running` as it is folded: no deadline
falls inside a run, and the worker's scheduler sends no command into the input topics."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaProducer

from streams import events as ev
from streams import outputs
from streams.clock import wall_ms
from streams.topic_admin import TopicPlan, ensure_topics
from streams.tracing import new_traceparent

PARTITIONS = 8
ORDINARY, HOT, EVERY_NTH_EXTENDS = 1_000, 50, 20
QUIET = ev.Policy(soft_close_window_ms=60_000, extension_ms=60_000, max_extension_ms=3_600_000)
STORMY = ev.Policy(soft_close_window_ms=3_600_000, extension_ms=900_000, max_extension_ms=86_400_000)


def auction_of(n: int) -> str:
    return f"hot-{n % HOT}" if n % EVERY_NTH_EXTENDS == 0 else f"quiet-{n % ORDINARY}"


async def create_topics(bootstrap: str, app_id: str) -> None:
    """The contract's topics (inputs stamped LogAppendTime) and our worker's changelog."""
    await ensure_topics(TopicPlan(bootstrap, PARTITIONS, 1, app_id))


async def produce(bootstrap: str, bids: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        now = wall_ms()
        registrations = [ev.AuctionStarted(f"quiet-{i}", now - 1_000, now + 3_600_000, QUIET, "m")
                         for i in range(ORDINARY)]  # fmt: skip
        registrations += [ev.AuctionStarted(f"hot-{i}", now - 1_000, now + 600_000, STORMY, "m") for i in range(HOT)]
        for payload in registrations:
            await send(producer, payload, f"reg-{payload.auction_id}", now)
        await producer.flush()
        # Every bid's log time is then later than every registration's: however a contender
        # interleaves the topics by time, a bid never meets an auction not yet registered.
        await asyncio.sleep(0.01)
        for n in range(bids):
            # Placed 1 ms apart every 100 bids: each hot bid lands later than the one before, so extends.
            await send(producer, ev.BidPlaced(auction_of(n), f"b{n}", f"u{n % 977}", "10.00", now + n // 100),
                       f"bid-{n}", now)  # fmt: skip
        await producer.flush()
    finally:
        await producer.stop()


async def send(producer: AIOKafkaProducer, payload: ev.Payload, event_id: str, now: int) -> None:
    rec = outputs.input_record(payload, event_id, now, new_traceparent(), "bench")
    await producer.send(rec.topic, rec.value, key=rec.key)
