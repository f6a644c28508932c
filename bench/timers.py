"""Completion lateness: AUCTIONS auctions live at once on one worker, ending one after another over
a minute, while the same worker folds BID_RATE bids a second of other auctions.

The auctions are registered up front (their policy's soft close never triggers: nobody bids on
them); their ends are spread evenly over SPREAD_S, starting LEAD_S after the registrations. The
bids are ordinary bids on 1,000 other auctions, paced from a little before the first end to a
little after the last. Everything is read back from the records:
- the completed timer event's broker timestamp (the bench sets auctions.timer.events to
  LogAppendTime) minus the auction's ends_at: how late the completion reached Kafka;
- the completion's ended_at_ms (the broker's time of the ExpireTimer command that ended it)
  minus ends_at: how late the scheduler's deadline reached Kafka;
- completions lost (an auction with none) and doubled (an auction with two different ones);
- the bids the worker folded per second over the ends, from its group's committed offsets.

`python -m bench.timers` runs the full size and writes bench/results/timers.json;
`--auctions N --bid-rate R` run a smaller one, printed, not written."""

from __future__ import annotations

import argparse
import asyncio
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from bench.common import cpu_ms, machine_busy_ms, report, stack, summary
from bench.ingest_watch import input_ends
from bench.profile import Profile, summarize
from streams import events as ev
from streams import outputs, topics
from streams.clock import wall_ms
from streams.message import LOG_APPEND_TIME
from streams.topic_admin import TopicPlan, ensure_topics
from streams.tracing import new_traceparent
from tests.support.kafka import reading_from_start
from tests.support.stack import APP_ID

FULL = {"auctions": 10_000, "bid_rate": 2_500}
LEAD_S, SPREAD_S = 45, 60
POLICY = ev.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=10_000)
LOADED, PACE_S = 1_000, 0.01


async def register(producer: AIOKafkaProducer, ends: dict[str, int], policy: ev.Policy) -> None:
    for auction_id, end in ends.items():
        rec = outputs.input_record(ev.AuctionStarted(auction_id, wall_ms() - 1_000, end, policy, "m"),
                                   f"reg-{auction_id}", wall_ms(), new_traceparent(), "bench")  # fmt: skip
        await producer.send(rec.topic, rec.value, key=rec.key)
    await producer.flush()


async def bids(producer: AIOKafkaProducer, rate: int, until_ms: int) -> int:
    """Ordinary bids on the loaded auctions, `rate` a second in PACE_S steps, until `until_ms`."""
    sent, started = 0, time.monotonic()
    while wall_ms() < until_ms:
        due = int((time.monotonic() - started) * rate)
        for n in range(sent, due):
            payload = ev.BidPlaced(f"loaded-{n % LOADED}", f"b{n}", f"u{n % 977}", "1.00", wall_ms())
            rec = outputs.input_record(payload, f"bid-{n}", wall_ms(), new_traceparent(), "bench")
            await producer.send(rec.topic, rec.value, key=rec.key)
        sent = max(sent, due)
        await asyncio.sleep(PACE_S)  # the load's pace
    await producer.flush()
    return sent


async def committed_bids(bootstrap: str) -> int:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        ends = await input_ends(bootstrap, (topics.BID_PLACED,))
        offsets = await admin.list_consumer_group_offsets(APP_ID, partitions=list(ends))
        return sum(max(0, meta.offset) for meta in offsets.values())
    finally:
        await admin.close()


async def stamp_by_broker(bootstrap: str, topic: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic,
                                                  {"message.timestamp.type": "LogAppendTime"})])  # fmt: skip
    finally:
        await admin.close()


async def measure(bootstrap: str, auctions: int, rate: int, worker_pid: int, profile: Path | None) -> dict[str, Any]:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await register(producer, {f"loaded-{i}": wall_ms() + 3_600_000 for i in range(LOADED)}, POLICY)
        first_end = wall_ms() + LEAD_S * 1000
        ends = {f"t-{i}": first_end + i * SPREAD_S * 1000 // auctions for i in range(auctions)}
        await register(producer, ends, POLICY)
        last_end = max(ends.values())
        await asyncio.sleep(max(0, first_end - 3_000 - wall_ms()) / 1000)
        folded_before, at_before = await committed_bids(bootstrap), time.monotonic()
        cpu_before, busy_before = cpu_ms(worker_pid), machine_busy_ms()
        profiler = Profile(worker_pid, profile) if profile else None
        sent = await bids(producer, rate, last_end + 2_000)
        if profiler:
            profiler.stop()
        folded_after, at_after = await committed_bids(bootstrap), time.monotonic()
        cpu_after, busy_after = cpu_ms(worker_pid), machine_busy_ms()
    finally:
        await producer.stop()
    seconds = at_after - at_before
    completions = await read_completions(bootstrap, set(ends), last_end + 60_000)
    firsts = {a: docs[0] for a, docs in completions.items()}
    return {
        "auctions": auctions,
        "spread_over_s": SPREAD_S,
        **({"profile": summarize(profile, seconds)} if profile else {}),
        "bids_sent_per_s": round(sent / seconds),
        "bids_folded_per_s": round((folded_after - folded_before) / seconds),
        "worker_cores_busy": round((cpu_after - cpu_before) / (seconds * 1000), 2),
        "others_cores_busy": round((busy_after - busy_before - (cpu_after - cpu_before)) / (seconds * 1000), 2),
        "completed": len(completions),
        "lost_completions": auctions - len(completions),
        "double_completions": sum(1 for docs in completions.values() if len({d["content"] for d in docs}) > 1),
        "repeated_completion_records": sum(len(docs) - 1 for docs in completions.values()),
        "completion_lateness_ms": summary([d["log_ms"] - ends[a] for a, d in firsts.items()]),
        "command_lateness_ms": summary([d["ended_at_ms"] - ends[a] for a, d in firsts.items()]),
        # From the command's arrival in the log to the completion's: the worker's fetch, merge and fold.
        "command_to_completion_ms": summary([d["log_ms"] - d["ended_at_ms"] for d in firsts.values()]),
    }


async def read_completions(bootstrap: str, wanted: set[str], deadline_ms: int) -> dict[str, list[dict[str, Any]]]:
    consumer = await reading_from_start(bootstrap, (topics.TIMER_EVENTS,))
    found: dict[str, list[dict[str, Any]]] = defaultdict(list)
    try:
        while wall_ms() < deadline_ms:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    data = orjson.loads(r.value)["data"]
                    if data["kind"] == "completed" and data["auction_id"] in wanted:
                        assert r.timestamp_type == LOG_APPEND_TIME, "the bench stamps timer events by the broker"
                        found[data["auction_id"]].append(
                            {"log_ms": r.timestamp, "ended_at_ms": data["ended_at_ms"], "content": r.value}
                        )
            if not batch and len(found) == len(wanted) and await caught_up(consumer):
                break
    finally:
        await consumer.stop()
    return found


async def caught_up(consumer: Any) -> bool:
    tps: list[TopicPartition] = list(consumer.assignment())
    ends = await consumer.end_offsets(tps)
    positions = [await consumer.position(tp) for tp in ends]
    return all(position >= end for position, end in zip(positions, ends.values(), strict=True))


def main(auctions: int, rate: int, profile: bool) -> dict[str, Any]:
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        asyncio.run(ensure_topics(TopicPlan(s.kafka.bootstrap, 8, 1, APP_ID)))
        asyncio.run(stamp_by_broker(s.kafka.bootstrap, topics.TIMER_EVENTS))
        worker = s.start_worker(AUCTION_TIMER_TICK_INTERVAL_S="5", AUCTION_TIMER_RECONCILE_INTERVAL_S="10")
        out = s.workdir / "worker.pyspy.txt" if profile else None
        return asyncio.run(measure(s.kafka.bootstrap, auctions, rate, worker.pid, out))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auctions", type=int, default=FULL["auctions"])
    parser.add_argument("--bid-rate", type=int, default=FULL["bid_rate"])
    parser.add_argument("--profile", action="store_true", help="py-spy the worker during the ends")
    args = parser.parse_args()
    full = (args.auctions, args.bid_rate) == tuple(FULL.values())
    report("timers", main(args.auctions, args.bid_rate, args.profile), full)
