"""State at scale: one worker holding `--live` live and `--ended` ended auctions (defaults 200,000 and
1,000,000), RocksDB store. Reports RSS, bytes per auction (in memory, on disk, encoded), restart
to ready after kill -9 (RocksDB, then the memory store reading the whole changelog, in the same
run), a standby's takeover of a stopped worker, completion lateness and bids folded while
loaded, and the tick records a second through Kafka.

Input: registrations produced as fast as Kafka takes them; the ended ones are registered with
an end in the past, so the worker ends each one through the log (ExpireTimer, completion), as
in production. One Kafka broker, one Redis and the worker(s) share this machine's two cores."""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from rocksdict import AccessType, Rdict

from bench.common import report, stack, summary
from bench.metrics_scrape import histogram_quantile, scrape
from bench.profile import Profile, summarize
from infra.ports import free_port
from infra.process import ServerProcess
from streams import events as ev
from streams import outputs, topics
from streams.clock import wall_ms
from streams.state import encode_state
from streams.topic_admin import TopicPlan, ensure_topics
from streams.tracing import new_traceparent
from tests.support.committed import committed_to_end, end_offsets_by_partition
from tests.support.gateway import timer
from tests.support.stack import APP_ID, Stack
from tests.support.waiting import eventually

FULL = {"live": 200_000, "ended": 1_000_000}
POLICY = ev.Policy(soft_close_window_ms=60_000, extension_ms=60_000, max_extension_ms=3_600_000)
BID_RATE, STORM_S, ENDING = 3_000, 30, 1_000
PAGE = 4096
OFFSET_KEY = b"__faust\0offset__"  # where Faust's RocksDB store keeps the changelog offset it applied
STANDBY_BUFFER = 1_000  # Faust's standby_buffer_size (its recovery_buffer_size by default)


def rss_bytes(proc: ServerProcess) -> int:
    assert proc.popen is not None
    fields = Path(f"/proc/{proc.popen.pid}/statm").read_text().split()
    return int(fields[1]) * PAGE


def du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


class PeakRss:
    """The worker's highest RSS, sampled every second while it loads."""

    def __init__(self, proc: ServerProcess) -> None:
        self.proc, self.peak = proc, 0

    async def run(self) -> None:
        while True:
            self.peak = max(self.peak, rss_bytes(self.proc))
            await asyncio.sleep(1)


async def produce(bootstrap: str, payloads: Sequence[ev.Payload]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20, max_batch_size=512 * 1024)
    await producer.start()
    try:
        for start in range(0, len(payloads), 5_000):
            futures = []
            for payload in payloads[start : start + 5_000]:
                now = wall_ms()
                event_id = f"{payload.auction_id}-{type(payload).__name__}-{start}"
                rec = outputs.input_record(payload, event_id, now, new_traceparent(), "bench")
                futures.append(await producer.send(rec.topic, rec.value, key=rec.key))
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def until(probe, timeout: float, what: str) -> float:
    started = time.monotonic()
    await eventually(probe, timeout, what, interval=0.2)
    return time.monotonic() - started


async def ready(port: int) -> bool:
    """Has the worker rebuilt its schedule after its latest rebalance (its ready gauge)?"""
    try:
        metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return False
    return metrics.get("auctions_timer_worker_ready", 0) == 1


TRIMS = "auctions_timer_memory_trim_seconds"


async def trim_metrics(port: int) -> dict[str, float]:
    metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    return {name: value for name, value in metrics.items() if name.startswith(TRIMS)}


def trim_figures(after: dict[str, float], before: dict[str, float]) -> dict[str, float | None]:
    """How often and how long the worker handed freed memory back (app/memory.py) between two
    scrapes of its metrics."""
    between = {name: value - before.get(name, 0) for name, value in after.items()}
    count = between.get(f"{TRIMS}_count", 0)
    longest = histogram_quantile(between, TRIMS, 1.0)  # a bucket's upper bound; inf past the last
    return {
        "count": count,
        "mean_ms": round(1_000 * between.get(f"{TRIMS}_sum", 0) / count, 1) if count else None,
        "longest_at_most_ms": None if longest is None or math.isinf(longest) else round(1_000 * longest),
    }


async def ends_of(bootstrap: str, topic: str) -> int:
    return sum((await end_offsets_by_partition(bootstrap, topic)).values())


async def lateness_under_load(s: Stack, port: int, live: int, pid: int, profile: Path | None) -> dict[str, object]:
    """Bids at BID_RATE/s on the `live` auctions for STORM_S s while ENDING auctions end."""
    bootstrap = s.kafka.bootstrap
    now = wall_ms()
    ends = {f"ending-{i}": now + 10_000 + i * (STORM_S - 15) * 1_000 // ENDING for i in range(ENDING)}
    await produce(bootstrap, [ev.AuctionStarted(a, now, e, POLICY, "m") for a, e in ends.items()])
    ticks_before, folded_before = await ends_of(bootstrap, topics.TICKS), scrape(f"http://127.0.0.1:{port}/metrics")
    started = time.monotonic()
    sent = 0
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    profiler = Profile(pid, profile) if profile else None
    try:
        while (elapsed := time.monotonic() - started) < STORM_S:
            while sent < elapsed * BID_RATE:  # the load's pace: BID_RATE a second, caught up if behind
                auction = f"live-{sent * 7919 % live}"
                rec = outputs.input_record(ev.BidPlaced(auction, f"s-{sent}", "u", "1", wall_ms()), f"s-{sent}",
                                           wall_ms(), new_traceparent(), "bench")  # fmt: skip
                await producer.send(rec.topic, rec.value, key=rec.key)
                sent += 1
            await asyncio.sleep(0.01)
        await producer.flush()
    finally:
        await producer.stop()
        if profiler:
            profiler.stop()
    window = time.monotonic() - started
    folded_after = scrape(f"http://127.0.0.1:{port}/metrics")
    key = f'auctions_timer_events_total{{topic="{topics.BID_PLACED}"}}'
    folded = folded_after.get(key, 0) - folded_before.get(key, 0)
    ticks = await ends_of(bootstrap, topics.TICKS) - ticks_before
    lateness = await completion_lateness(bootstrap, ends)
    return {
        "bids_sent": sent,
        "bids_folded_per_s": round(folded / window),
        "ending_auctions": ENDING,
        "completion_lateness_ms": summary(lateness),
        "tick_records_per_s": round(ticks / window, 1),
        **({"profile": summarize(profile, window)} if profile else {}),
    }


async def completion_lateness(bootstrap: str, ends: dict[str, int]) -> list[int]:
    """Broker timestamp of each completion record minus its auction's end (what a consumer sees)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    tps = [TopicPartition(topics.TIMER_EVENTS, p) for p in range(8)]
    await consumer.start()
    consumer.assign(tps)
    found: dict[str, int] = {}
    try:
        deadline = time.monotonic() + 120
        while len(found) < len(ends) and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=500, max_records=10_000)).values():
                for r in records:
                    data = orjson.loads(r.value)["data"]
                    if data["kind"] == "completed" and data["auction_id"] in ends:
                        found.setdefault(data["auction_id"], r.timestamp - ends[data["auction_id"]])
    finally:
        await consumer.stop()
    return list(found.values())


def main(live: int, ended: int, profile: bool) -> dict[str, object]:
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING", AUCTION_TIMER_ENDED_TTL_S="60") as s:
        return asyncio.run(measure(s, live, ended, s.workdir / "worker.pyspy.txt" if profile else None))


async def measure(s: Stack, live: int, ended: int, profile: Path | None) -> dict[str, object]:
    bootstrap = s.kafka.bootstrap
    await ensure_topics(TopicPlan(bootstrap, 8, 0, APP_ID))  # before the worker: the input waits for it
    port = free_port()
    worker = s.start_worker("w1", AUCTION_TIMER_WORKER_ID="scale-1", AUCTION_TIMER_WORKER_METRICS_PORT=str(port))
    peak = PeakRss(worker)
    sampling = asyncio.create_task(peak.run())
    now = wall_ms()
    t0 = time.monotonic()
    await produce(bootstrap, [ev.AuctionStarted(f"ended-{i}", now - 7_200_000, now - 3_600_000, POLICY, "m")
                              for i in range(ended)])  # fmt: skip
    await produce(bootstrap, [ev.AuctionStarted(f"live-{i}", now, now + 7_200_000, POLICY, "m") for i in range(live)])
    await until(lambda: _completed_at_least(port, ended), 1_800, "the ended auctions completed")
    await until(lambda: committed_to_end(bootstrap), 600, "everything committed")
    load_s = time.monotonic() - t0
    # Measured loaded, not loading: the projection consumer (same process) has 2.2 million timer
    # events of the bulk load to write to Redis first, a backlog a real catalogue never has at once.
    projected_s = await until(lambda: projection_caught_up(bootstrap), 1_800, "the projection caught up")
    sampling.cancel()
    rss = rss_bytes(worker)
    disk = du(s.workdir / "w1")
    live_state = timer("live-x", 7_200_000)
    ended_state = replace(live_state, status="ended", version=2, ended_at_ms=live_state.ends_at_ms)
    assert worker.popen is not None
    trimmed_loading = await trim_metrics(port)
    loaded = await lateness_under_load(s, port, live, worker.popen.pid, profile)
    trims = {
        "loading": trim_figures(trimmed_loading, {}),  # the load and the projection's catch-up
        "while_loaded": trim_figures(await trim_metrics(port), trimmed_loading),
    }

    # Standby: a second worker joins, copies the table, then the first stops.
    port2 = free_port()
    second = s.start_worker("w2", AUCTION_TIMER_WORKER_ID="scale-2", AUCTION_TIMER_WORKER_METRICS_PORT=str(port2))
    await until(lambda: ready(port2), 600, "the second worker in the group")
    await eventually(lambda: standby_caught_up(bootstrap, s.workdir / "w2"), 1_800, "the standby copy", interval=2)
    # Taken over: the second worker schedules every live auction, not only its own half. Timed
    # from the stop's SIGTERM (the first worker's shutdown and its leaving the group included).
    stopped_at = time.monotonic()
    worker.stop()
    await until(lambda: scheduling_at_least(port2, live), 600, "the takeover")
    takeover_s = time.monotonic() - stopped_at
    second.stop()

    # Restart to ready: kill -9, then restart on the same RocksDB files; then the memory store.
    again = {"AUCTION_TIMER_WORKER_ID": "scale-1", "AUCTION_TIMER_WORKER_METRICS_PORT": str(port)}
    restart = s.start_worker("w1", **again)
    await until(lambda: ready(port), 600, "the first worker back")
    restart.kill()
    restarted = s.start_worker("w1", **again)
    rocksdb_ready_s = await until(lambda: ready(port), 600, "ready (RocksDB)")
    restarted.kill()
    memory = s.start_worker("w1m", AUCTION_TIMER_TABLE_STORE="memory", **again)
    memory_ready_s = await until(lambda: ready(port), 900, "ready (memory store)")
    memory.stop()
    return {
        "live_auctions": live,
        "ended_auctions": ended,
        "load_s": round(load_s, 1),
        "projection_caught_up_after_load_s": round(projected_s, 1),
        "worker_rss_mib": round(rss / 2**20),
        "worker_peak_rss_while_loading_mib": round(peak.peak / 2**20),
        "rss_bytes_per_auction": round(rss / (live + ended)),
        "rocksdb_bytes_per_auction": round(disk / (live + ended)),
        "encoded_state_bytes": {"live": len(encode_state(live_state)), "ended": len(encode_state(ended_state))},
        "restart_to_ready_s": {"rocksdb": round(rocksdb_ready_s, 1), "memory": round(memory_ready_s, 1)},
        "standby_takeover_s": round(takeover_s, 1),
        "while_loaded": loaded,
        "memory_trims": trims,
        "cpu_count": os.cpu_count(),
    }


async def projection_caught_up(bootstrap: str) -> bool:
    """Has the worker's projection consumer committed every timer event?"""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{APP_ID}-projection")
    finally:
        await admin.close()
    ends = await end_offsets_by_partition(bootstrap, topics.TIMER_EVENTS)
    return all(tp in committed and committed[tp].offset >= end for tp, end in ends.items() if end)


async def scheduling_at_least(port: int, count: int) -> bool:
    try:
        metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    except OSError:
        return False
    return metrics.get("auctions_timer_active", 0) >= count and metrics.get("auctions_timer_worker_ready", 0) == 1


async def standby_caught_up(bootstrap: str, workdir: Path) -> bool:
    """Has the worker in `workdir` copied the whole changelog into its RocksDB databases (its
    standby partitions and its active ones)? Read from the offsets Faust persists there, in
    read-only opens that the running worker does not notice. A standby applies what it reads
    in buffers of STANDBY_BUFFER records, and the last, partial one at the next rebalance, so
    within one buffer of the end is caught up. (A database's size on disk stops growing long
    before: RocksDB holds recent writes in memory.)"""
    ends = await end_offsets_by_partition(bootstrap, topics.changelog_topic(APP_ID))
    persisted = await asyncio.to_thread(persisted_offsets, workdir / "faust" / "v1" / "tables")
    return all(persisted.get(tp.partition, -1) >= end - STANDBY_BUFFER for tp, end in ends.items() if end)


def persisted_offsets(tables: Path) -> dict[int, int]:
    out = {}
    for path in tables.glob("timers-*.db"):
        db = Rdict(str(path), access_type=AccessType.read_only())
        try:
            offset = db.get(OFFSET_KEY)
        finally:
            db.close()
        if offset is not None:
            out[int(path.stem.rsplit("-", 1)[1])] = int(offset)
    return out


async def _completed_at_least(port: int, count: int) -> bool:
    metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    return metrics.get('auctions_timer_transitions_total{kind="completed"}', 0) >= count


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--live", type=int, default=FULL["live"])
    parser.add_argument("--ended", type=int, default=FULL["ended"])
    parser.add_argument("--profile", action="store_true", help="py-spy the worker while it is loaded")
    args = parser.parse_args()
    report("scale", main(args.live, args.ended, args.profile), full=(args.live, args.ended) == tuple(FULL.values()))
