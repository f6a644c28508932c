"""Completion lateness and tick delay with 10,000 concurrent auctions on one worker.

All 10,000 are registered up front and end spread over one minute, so every one is live
at once. Lateness = the completed event's server time minus ends_at. Tick delay = a
periodic tick's server time minus when it was due (the worker keeps each auction's tick
phase, so due = registration tick + k x interval)."""

from __future__ import annotations

import asyncio
import itertools
import sys
import time
from collections import defaultdict

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import stack, summary, write
from streams import events as ev
from streams import outputs, topics
from streams.clock import wall_ms
from streams.tracing import new_traceparent
from tests.support.kafka import reading_from_start

AUCTIONS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
TICK_S = int(sys.argv[2]) if len(sys.argv) > 2 else 5
POLICY = ev.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=10_000)


def main() -> dict[str, object]:
    with stack(AUCTION_TIMER_TICK_INTERVAL_S=str(TICK_S), AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        s.start_worker()
        return asyncio.run(measure(s.kafka.bootstrap))


async def measure(bootstrap: str) -> dict[str, object]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    consumer = await reading_from_start(bootstrap, (topics.TIMER_EVENTS, topics.TICKS), max_poll_records=5_000)
    completed: dict[str, int] = {}
    fired: dict[str, int] = {}
    completion_records = 0
    ticks: dict[str, list[tuple[int, str]]] = defaultdict(list)
    try:
        first_end = wall_ms() + 60_000
        ends = {f"bench-{i}": first_end + i * 60_000 // AUCTIONS for i in range(AUCTIONS)}
        started = time.monotonic()
        for auction_id, end in ends.items():
            rec = outputs.input_record(ev.AuctionStarted(auction_id, wall_ms(), end, POLICY, "m"),
                                       auction_id, wall_ms(), new_traceparent(), "bench")  # fmt: skip
            await producer.send(rec.topic, rec.value, key=rec.key)
        await producer.flush()
        print(f"produced {AUCTIONS} registrations in {time.monotonic() - started:.1f}s", flush=True)
        deadline = time.monotonic() + 300
        while len(completed) < AUCTIONS and time.monotonic() < deadline:
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for r in records:
                    data = orjson.loads(r.value)["data"]
                    if tp.topic == topics.TICKS:
                        ticks[data["auction_id"]].append((data["server_time_ms"], data["status"]))
                    elif data["kind"] == "completed":
                        completion_records += 1
                        completed.setdefault(data["auction_id"], data["server_time_ms"])
                        fired.setdefault(data["auction_id"], data["ended_at_ms"])
    finally:
        await consumer.stop()
        await producer.stop()
    lateness = [completed[a] - ends[a] for a in completed]
    delays, gaps = [], []
    for series in ticks.values():
        live = [t for t, status in series if status == "running"]
        origin = live[0]
        delays += [t - (origin + k * TICK_S * 1000) for k, t in enumerate(live[1:], start=1)]
        gaps += [b - a for a, b in itertools.pairwise(live)]
    return {
        "auctions": AUCTIONS,
        "completed": len(completed),
        "lost_completions": AUCTIONS - len(completed),
        "repeated_completion_records": completion_records - len(completed),
        "completion_lateness_ms": summary(lateness),
        # Where the lateness comes from: the scheduler firing the deadline, then the command's
        # trip through Kafka and the fold to the completed event.
        "deadline_fired_late_ms": summary([fired[a] - ends[a] for a in fired]),
        "fired_to_completed_ms": summary([completed[a] - fired[a] for a in completed]),
        "tick_interval_s": TICK_S,
        "tick_delay_ms": summary(delays),
        "max_gap_between_ticks_ms": max(gaps) if gaps else None,
    }


if __name__ == "__main__":
    write("timers", main())
