"""Last-second bids against a bid storm (issue: event-time completion). 500 auctions take a
storm of ordinary bids as fast as the producer and the worker go; 200 other auctions end one
after another during it, each with one last-second bid sent 200 ms before its end and placed
30 or 5 ms before it. Reports how many of the bids Kafka took before the deadline extended
their auction (must be all), completion lateness under the storm (when a consumer saw the
completion, minus the final end) and the watermark lag the worker reported. One broker, one worker,
Redis and the load generator share this machine's two cores."""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from bench.common import percentile, stack, summary, write
from bench.metrics_scrape import scrape
from infra.ports import free_port
from streams import events as ev
from streams import topics
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io
from tests.support.storm import Snipe, snipe, storming
from tests.support.waiting import eventually

QUIET = ev.Policy(soft_close_window_ms=1_000, extension_ms=2_000, max_extension_ms=60_000)
TARGETS, ORDINARY, STORM = 200, 500, 150_000


async def register(producer, ends: dict[str, int], start: int) -> None:
    futures = [await producer.send(r.topic, r.value, key=r.key)
               for r in (record(ev.AuctionStarted(a, start, e, QUIET, "m")) for a, e in ends.items())]  # fmt: skip
    await asyncio.gather(*futures)


async def run(bootstrap: str, port: int) -> dict[str, object]:
    lags: list[float] = []
    async with kafka_io(bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        start = now_ms()
        quiet = {f"quiet-{i}": start + 3_600_000 for i in range(ORDINARY)}
        await register(producer, quiet, start)
        first_end = now_ms() + 10_000
        ends = {f"target-{i}": first_end + 100 * i for i in range(TARGETS)}
        await register(producer, ends, now_ms())
        shots = [Snipe(a, e - (30 if i % 2 else 5)) for i, (a, e) in enumerate(ends.items())]
        started = time.monotonic()
        async with storming(producer, list(quiet), STORM) as storm:
            tasks = [asyncio.create_task(snipe(producer, s, ends[s.auction_id] - 200)) for s in shots]
            while not all(t.done() for t in tasks):
                metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
                lags += [v for k, v in metrics.items() if k.startswith("auctions_timer_watermark_lag_ms")]
                await asyncio.sleep(0.5)  # sampling period of the measurement
            await asyncio.gather(*tasks)
            sent = storm.sent
        storm_s = time.monotonic() - started

        async def done() -> bool:
            kinds = defaultdict(set)
            for d in watch.docs(topics.TIMER_EVENTS):
                kinds[d["data"]["kind"]].add(d["data"]["auction_id"])
            return kinds["completed"] >= set(ends)

        await eventually(done, 300, "every target completed")
        completed = {s.doc["data"]["auction_id"]: s for s in watch.entries(topics.TIMER_EVENTS)
                     if s.doc["data"]["kind"] == "completed"}  # fmt: skip
        extended = {d["data"]["auction_id"] for d in watch.docs(topics.TIMER_EVENTS) if d["data"]["kind"] == "extended"}
    in_time = [s for s in shots if s.log_ms < ends[s.auction_id]]
    # When a consumer saw the completion, minus the auction's final end.
    lateness = [completed[a].received_ms - completed[a].doc["data"]["ends_at_ms"] for a in ends]
    return {
        "targets": TARGETS,
        "storm_bids": sent,
        "storm_bids_per_s": round(sent / storm_s),
        "last_second_bids_in_time": len(in_time),
        "last_second_bids_in_time_extended": sum(1 for s in in_time if s.auction_id in extended),
        "completion_lateness_ms": summary(lateness),
        "watermark_lag_p99_ms": percentile(lags, 0.99) if lags else None,
    }


def main() -> dict[str, object]:
    port = free_port()
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        s.start_worker(AUCTION_TIMER_WORKER_METRICS_PORT=str(port))
        return asyncio.run(run(s.kafka.bootstrap, port))


if __name__ == "__main__":
    write("storm", main())
