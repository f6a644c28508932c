"""Bids folded per second by one worker process, end to end (Kafka in, table and outputs out).

200,000 bids wait in Kafka before the worker starts: 95% are ordinary bids (nothing about
the timer changes), 5% land in soft-close windows and extend (a table write and four
output records each). The rate is read off the worker's own counter."""

from __future__ import annotations

import asyncio
import sys
import time

from aiokafka import AIOKafkaProducer

from bench.common import stack, write
from bench.metrics_scrape import scrape
from infra.ports import free_port
from streams import events as ev
from streams import outputs, topics
from streams.clock import wall_ms
from streams.tracing import new_traceparent

BIDS = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
EVERY_NTH_EXTENDS = int(sys.argv[2]) if len(sys.argv) > 2 else 20  # 20: 5% of bids extend
ORDINARY, HOT = 1_000, 50


async def produce_all(bootstrap: str) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=256 * 1024)
    await producer.start()
    try:
        now = wall_ms()
        quiet = ev.Policy(soft_close_window_ms=60_000, extension_ms=60_000, max_extension_ms=3_600_000)
        hot = ev.Policy(soft_close_window_ms=3_600_000, extension_ms=900_000, max_extension_ms=86_400_000)
        for i in range(ORDINARY):
            await send(producer, ev.AuctionStarted(f"quiet-{i}", now, now + 3_600_000, quiet, "m"), now)
        for i in range(HOT):
            await send(producer, ev.AuctionStarted(f"hot-{i}", now, now + 600_000, hot, "m"), now)
        for n in range(BIDS):
            auction = f"hot-{n % HOT}" if EVERY_NTH_EXTENDS and n % EVERY_NTH_EXTENDS == 0 else f"quiet-{n % ORDINARY}"
            await send(producer, ev.BidPlaced(auction, f"b{n}", f"u{n % 977}", "10.00", now + n // 100), now)
        await producer.flush()
    finally:
        await producer.stop()


async def send(producer: AIOKafkaProducer, payload: ev.Payload, now: int) -> None:
    rec = outputs.input_record(payload, f"{payload.auction_id}-{now}-{id(payload)}", now, new_traceparent(), "bench")
    await producer.send(rec.topic, rec.value, key=rec.key)


def main() -> dict[str, object]:
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        from streams.topic_admin import ensure_topics
        from tests.support.gateway import gateway_settings

        asyncio.run(
            ensure_topics(
                gateway_settings(s.kafka.bootstrap, s.redis.url if s.redis else "", s.key_prefix).topic_plan()
            )
        )
        t0 = time.monotonic()
        asyncio.run(produce_all(s.kafka.bootstrap))
        print(f"produced {BIDS} bids in {time.monotonic() - t0:.1f}s", flush=True)
        port = free_port()
        s.start_worker(AUCTION_TIMER_WORKER_METRICS_PORT=str(port))
        url = f"http://127.0.0.1:{port}/metrics"
        key = f'auctions_timer_events_total{{topic="{topics.BID_PLACED}"}}'
        samples: list[tuple[float, float]] = []
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            try:
                folded = scrape(url).get(key, 0.0)
            except OSError:
                folded = 0.0
            samples.append((time.monotonic(), folded))
            if folded >= BIDS:
                break
            time.sleep(1.0)  # sampling period of the measurement (scrapes cost the worker CPU)
    moving = [(t, n) for t, n in samples if n > 0]
    first, last = moving[0], moving[-1]
    middle = [(t, n) for t, n in moving if 0.1 * BIDS <= n <= 0.9 * BIDS]
    steady = (middle[-1][1] - middle[0][1]) / (middle[-1][0] - middle[0][0]) if len(middle) > 1 else None
    return {
        "bids": BIDS,
        "extending_share": 1 / EVERY_NTH_EXTENDS if EVERY_NTH_EXTENDS else 0.0,
        "folded": int(last[1]),
        "bids_per_second_overall": round(last[1] / max(1e-6, last[0] - first[0] + 1.0)),
        "bids_per_second_steady": round(steady) if steady else None,
    }


if __name__ == "__main__":
    write("ingest", main())
