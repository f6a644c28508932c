"""Recovery: a worker killed with -9 while it folds a stream of bids, with 1,000 auctions live
(200 end during the outage), and a Redis primary lost under Sentinel. Counts, from the topic,
lost completions, doubled ones (an auction with two different completion records) and
repeated ones (the same record published again after the crash, which consumers drop by id)."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer
from redis.asyncio.sentinel import Sentinel

from bench.common import write
from infra.kafka_server import KafkaCluster
from infra.redis_server import MASTER_NAME, RedisSentinelGroup
from projections.keys import Keys
from streams import events as ev
from streams import outputs, topics
from streams.clock import wall_ms
from streams.tracing import new_traceparent
from tests.support.kafka import TopicWatcher
from tests.support.projection import table_and_mismatches
from tests.support.stack import Stack
from tests.support.waiting import eventually

AUCTIONS, DURING_OUTAGE = 1_000, 200
POLICY = ev.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=10_000)


async def register(bootstrap: str, ends: dict[str, int]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for auction_id, end in ends.items():
            rec = outputs.input_record(ev.AuctionStarted(auction_id, wall_ms(), end, POLICY, "m"), auction_id,
                                       wall_ms(), new_traceparent(), "bench")  # fmt: skip
            await producer.send(rec.topic, rec.value, key=rec.key)
        await producer.flush()
    finally:
        await producer.stop()


async def bid_stream(bootstrap: str, auctions: list[str], sent: list[int]) -> None:
    """Ordinary bids at about 200 a second until cancelled; `sent[0]` counts them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        for n in itertools.count():
            auction = auctions[n % len(auctions)]
            rec = outputs.input_record(ev.BidPlaced(auction, f"b-{n}", "u", "1", wall_ms()), f"{auction}-b-{n}",
                                       wall_ms(), new_traceparent(), "bench")  # fmt: skip
            await producer.send(rec.topic, rec.value, key=rec.key)
            sent[0] = n + 1
            await asyncio.sleep(0.005)  # the load's pace
    finally:
        await producer.stop()


async def worker_kill(s: Stack) -> dict[str, object]:
    s.start_worker("w", AUCTION_TIMER_WORKER_ID="bench-worker")
    base = wall_ms() + 20_000
    ends = {f"k-{i}": base + (3_000 + 10 * i if i < DURING_OUTAGE else 40_000 + 20 * i) for i in range(AUCTIONS)}
    await register(s.kafka.bootstrap, ends)
    watch = TopicWatcher(s.kafka.bootstrap, (topics.TIMER_EVENTS,))
    await watch.start()

    def of_kind(kind: str) -> list[dict]:
        return [d["data"] for d in watch.docs(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == kind)]

    async def at_least(kind: str, count: int, timeout: float) -> None:
        """Waits, then carries on either way: what is missing is reported, not raised."""
        with contextlib.suppress(AssertionError):
            await eventually(lambda: asyncio.sleep(0, result=len({d["auction_id"] for d in of_kind(kind)}) >= count),
                             timeout, f"{count} {kind}", interval=0.2)  # fmt: skip

    sent = [0]
    bids = asyncio.create_task(bid_stream(s.kafka.bootstrap, [a for a in ends if int(a[2:]) >= DURING_OUTAGE], sent))
    try:
        await at_least("registered", AUCTIONS, 120)
        # Killed while it folds the stream (2,000 bids in, the stream still running).
        await eventually(lambda: asyncio.sleep(0, result=sent[0] >= 2_000), 60, "the bid stream under way")
        s.processes[-1].kill()
        outage_over = base + 3_000 + 10 * DURING_OUTAGE + 2_000
        await eventually(
            lambda: asyncio.sleep(0, result=wall_ms() > outage_over), 120, "the outage's deadlines to pass"
        )
        restarted = wall_ms()
        s.start_worker("w", AUCTION_TIMER_WORKER_ID="bench-worker")
        await at_least("completed", DURING_OUTAGE, 180)
        bids.cancel()
        await at_least("completed", AUCTIONS, 180)
    finally:
        bids.cancel()
        await watch.stop()
    done = of_kind("completed")
    contents: dict[str, set[bytes]] = {}
    for d in done:
        contents.setdefault(d["auction_id"], set()).add(orjson.dumps(d, option=orjson.OPT_SORT_KEYS))
    overdue = [d["server_time_ms"] for d in done if int(d["auction_id"][2:]) < DURING_OUTAGE]
    on_time = [d["server_time_ms"] - ends[d["auction_id"]] for d in done if int(d["auction_id"][2:]) >= DURING_OUTAGE]
    distinct = {d["auction_id"] for d in done}
    return {
        "auctions": AUCTIONS,
        "ended_during_outage": DURING_OUTAGE,
        "first_overdue_completion_after_restart_ms": min(overdue) - restarted if overdue else None,
        "all_overdue_completed_after_restart_ms": max(overdue) - restarted if overdue else None,
        "lateness_after_recovery_max_ms": max(on_time) if on_time else None,
        "lost_completions": AUCTIONS - len(distinct),
        "double_completions": sum(1 for variants in contents.values() if len(variants) > 1),
        "repeated_completion_records": len(done) - len(distinct),
    }


async def redis_failover(kafka: KafkaCluster, group: RedisSentinelGroup, work: Path) -> dict[str, object]:
    prefix = f"bench:{uuid.uuid4().hex[:6]}:"
    s = Stack(kafka, None, work / "fo", prefix, overrides={
        "AUCTION_TIMER_REDIS_SENTINELS": group.sentinel_addresses, "AUCTION_TIMER_REDIS_SENTINEL_MASTER": MASTER_NAME,
        "AUCTION_TIMER_REDIS_PASSWORD": "bench", "AUCTION_TIMER_RECONCILE_INTERVAL_S": "1",
        "AUCTION_TIMER_APP_ID": "bench-fo", "AUCTION_TIMER_LOG_LEVEL": "WARNING"})  # fmt: skip
    try:
        s.start_worker()
        ends = {f"fo-{i}": wall_ms() + 3_600_000 for i in range(AUCTIONS)}
        await register(kafka.bootstrap, ends)
        client = Sentinel([("127.0.0.1", p) for p in group.sentinel_ports], socket_timeout=1).master_for(
            MASTER_NAME, password="bench", decode_responses=True, socket_timeout=1
        )
        keys = Keys(prefix)

        async def whole() -> bool:
            try:
                table, problems = await table_and_mismatches(kafka.bootstrap, "bench-fo", client, keys, "fo-")
            except Exception:  # noqa: BLE001 - Redis is failing over
                return False
            return len(table) == AUCTIONS and not problems

        await eventually(whole, 120, "the first full projection", interval=0.2)
        old = group.current_primary_port()
        group.kill_primary()
        killed = time.monotonic()
        await asyncio.to_thread(group.wait_failover, old)
        promoted = time.monotonic()
        await eventually(whole, 60, "the projection to be whole again", interval=0.05)
        repaired = time.monotonic()
        await client.aclose()
        return {
            "auctions": AUCTIONS,
            "promotion_after_kill_ms": round((promoted - killed) * 1000),
            "projection_whole_after_promotion_ms": round((repaired - promoted) * 1000),
        }
    finally:
        s.stop_all()


def main() -> dict[str, object]:
    """Servers start outside the event loop (their readiness probes run loops of their own)."""
    work = Path(tempfile.mkdtemp(prefix="auction-bench-recovery-"))
    kafka = KafkaCluster(work / "kafka")
    kafka.start()
    group = RedisSentinelGroup(work / "sentinel", password="bench")
    try:
        quiet = {"AUCTION_TIMER_LOG_LEVEL": "WARNING", "AUCTION_TIMER_REDIS_URL": "redis://127.0.0.1:1/0"}
        s = Stack(kafka, None, work / "kill", f"bench:{uuid.uuid4().hex[:6]}:", overrides=quiet)
        try:
            kill = asyncio.run(worker_kill(s))
        finally:
            s.stop_all()
        group.start()
        failover = asyncio.run(redis_failover(kafka, group, work))
    finally:
        group.stop()
        kafka.stop()
    return {"worker_kill_9": kill, "redis_primary_loss": failover}


if __name__ == "__main__":
    write("recovery", main())
