"""State at scale against real Kafka, with the RocksDB store: a restart reads only the changelog's
tail and fires what came due meanwhile; a standby takes over a stopped worker's partitions warm;
Kafka's tick traffic follows the auctions near their end, not the catalogue."""

from __future__ import annotations

import asyncio
from collections import Counter
from functools import partial

import pytest
from aiokafka import AIOKafkaProducer

from bench.metrics_scrape import scrape
from infra.ports import free_port
from infra.process import ServerProcess
from streams import events as ev
from streams import scheduler, topics
from streams.processor import partition_for
from tests.support.committed import committed_to_end
from tests.support.events import now_ms, record
from tests.support.kafka import TopicWatcher, kafka_io, member_ids, stable_members
from tests.support.recovery_log import records_read, recoveries
from tests.support.stack import APP_ID, Stack
from tests.support.waiting import eventually

POLICY = ev.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=10_000)


async def register(producer: AIOKafkaProducer, ends: dict[str, int], starts: int) -> None:
    futures = []
    for auction_id, end in ends.items():
        rec = record(ev.AuctionStarted(auction_id, starts, end, POLICY, "m"))
        futures.append(await producer.send(rec.topic, rec.value, key=rec.key))
    await asyncio.gather(*futures)


def completions(watch: TopicWatcher) -> Counter[str]:
    return Counter(d["data"]["auction_id"] for d in watch.docs(topics.TIMER_EVENTS) if d["data"]["kind"] == "completed")


async def _all_completed(watch: TopicWatcher, auctions: set[str]) -> bool:
    return set(completions(watch)) >= auctions


@pytest.mark.slow
async def test_a_restarted_worker_reads_only_the_changelog_tail_and_fires_what_came_due(stack: Stack) -> None:
    worker = stack.start_worker("w", AUCTION_TIMER_WORKER_ID="big")
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        base = now_ms()
        await register(producer, {f"big-{i}": base + 3_600_000 for i in range(50_000)}, base)
        await eventually(partial(committed_to_end, stack.kafka.bootstrap), 300, "50,000 registrations folded")
        due = {f"due-{i}": now_ms() + 5_000 for i in range(100)}  # from readiness, not before it
        await register(producer, due, base)
        await eventually(partial(committed_to_end, stack.kafka.bootstrap), 60, "the due auctions folded")
        worker.kill()  # kill -9
        last = max(due.values())
        await eventually(lambda: asyncio.sleep(0, now_ms() > last + 1_000), 60, "the deadlines to pass while down")
        assert not completions(watch), "nothing completes while no worker runs"

        port = free_port()
        restarted = stack.start_worker("w", AUCTION_TIMER_WORKER_ID="big", AUCTION_TIMER_WORKER_METRICS_PORT=str(port))
        await eventually(partial(_all_completed, watch, set(due)), 120, "the overdue auctions completed")
        done = completions(watch)
        assert set(done) == set(due) and all(n == 1 for n in done.values())  # once each, none of the 50,000
        # Restarted once more, with nothing left to fold: the gauge reports the restored schedule
        # once the worker's tasks run (Faust starts them after the first restore), as a finished
        # reconciliation pass shows they do.
        restarted.kill()
        stack.start_worker("w", AUCTION_TIMER_WORKER_ID="big", AUCTION_TIMER_WORKER_METRICS_PORT=str(port))
        metrics = await eventually(partial(_metrics_after_a_pass, port), 90, "a reconciliation pass after the restart")
        assert metrics is not None and metrics["auctions_timer_active"] == 50_000
        # It trims (app/memory.py): its first check finds more than the growth step resident.
        assert metrics["auctions_timer_memory_trim_seconds_count"] >= 1
        [*_, (highwater, starts)] = recoveries(restarted.log_path)
        total, read = sum(h + 1 for h in highwater.values()), records_read(highwater, starts)
        print(f"restart read {read} of {total} changelog records")
        assert total >= 50_100 and read <= 1_000  # the tail, not the table


@pytest.mark.slow
async def test_a_standby_takes_over_a_stopped_workers_partitions_warm(stack: Stack) -> None:
    # Static members (as in production, so a crashed worker's restart keeps its partitions).
    stack.start_worker("w1", AUCTION_TIMER_WORKER_ID="static-1")
    second = stack.start_worker("w2", AUCTION_TIMER_WORKER_ID="static-2")
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        await eventually(partial(_members, stack.kafka.bootstrap, 2), 90, "both workers in the group")
        base = now_ms()
        await register(producer, {f"warm-{i}": base + 3_600_000 for i in range(4_000)}, base)
        due = {f"soon-{i}": now_ms() + 15_000 + 100 * i for i in range(40)}
        await register(producer, due, base)
        await eventually(partial(committed_to_end, stack.kafka.bootstrap), 120, "everything folded")
        first = stack.processes[0]
        takeovers_before = len(recoveries(first.log_path))
        assert await _listed(stack.kafka.bootstrap, "static-2")  # a static member's id starts with its instance id
        second.stop()  # its partitions move to the first worker, which holds standby copies of them
        # It left as it stopped: a static member that did not would keep its partitions, unfolded,
        # for the session timeout (10 s), and be listed until then.
        assert not await _listed(stack.kafka.bootstrap, "static-2")
        assert "left the consumer group" in second.log_path.read_text()  # not the session timing out
        await eventually(partial(_recovered_again, first, takeovers_before), 60, "the takeover's recovery")
        highwater, starts = recoveries(first.log_path)[-1]  # now all eight partitions are its
        read, total = records_read(highwater, starts), sum(h + 1 for h in highwater.values())
        print(f"takeover read {read} of {total} changelog records")
        # Cold, it would read every record of the partitions it took over (about half of `total`);
        # warm, only what its standby copy had not read yet when the other worker stopped (that
        # lag was 300 records once, on a loaded machine).
        assert total >= 4_000 and read <= total // 4
        await eventually(partial(_all_completed, watch, set(due)), 90, "the due auctions completed")
        assert all(n == 1 for n in completions(watch).values())
        assert {partition_for(a.encode(), 8) for a in due} >= {0, 1}  # both workers' partitions were involved


async def _metrics_after_a_pass(port: int) -> dict[str, float] | None:
    metrics = await asyncio.to_thread(scrape, f"http://127.0.0.1:{port}/metrics")
    return metrics if metrics.get('auctions_reconciliation_passes_total{result="ok"}', 0) >= 1 else None


async def _members(bootstrap: str, count: int) -> bool:
    return await stable_members(bootstrap, APP_ID) == count


async def _listed(bootstrap: str, instance_id: str) -> bool:
    return any(m.startswith(f"{instance_id}-") for m in await member_ids(bootstrap, APP_ID))


async def _recovered_again(process: ServerProcess, before: int) -> bool:
    return len(recoveries(process.log_path)) > before


async def test_kafka_tick_traffic_follows_auctions_near_their_end(stack: Stack) -> None:
    """20,000 live auctions, 20 of them inside the tick horizon: over a measured window Kafka
    carries periodic ticks for those 20 only (changes always tick, so the registrations'
    own ticks come before the window; fewer registrations than the worker lets wait, so none of
    their ticks is dropped)."""
    assert scheduler.MAX_PENDING_CHANGE_TICKS > 20_020
    stack.start_worker(AUCTION_TIMER_KAFKA_TICK_HORIZON_S="60")
    async with kafka_io(stack.kafka.bootstrap, topics.TICKS) as (producer, watch):
        base = now_ms()
        await register(producer, {f"far-{i}": base + 3_600_000 for i in range(20_000)}, base)
        near = {f"near-{i}": now_ms() + 50_000 for i in range(20)}
        await register(producer, near, base)
        await eventually(partial(committed_to_end, stack.kafka.bootstrap), 300, "the registrations folded")
        await eventually(partial(_registration_ticks, watch, 20_020), 60, "a tick for each registration")
        counted_from = len(watch.seen)
        window_start = now_ms()
        await eventually(lambda: asyncio.sleep(0, now_ms() > window_start + 5_000), 30, "a 5 s window")
        ticks = [s.doc["data"] for s in watch.seen[counted_from:]]
        window_s = (now_ms() - window_start) / 1000
        assert {t["auction_id"] for t in ticks} <= set(near)  # no periodic tick for a far auction
        assert len(ticks) <= 20 * (window_s / 1 + 2)  # interval 1 s (the stack's), plus slack at the edges
        print(f"{len(ticks)} tick records in {window_s:.1f} s with 20,020 live auctions")


async def _registration_ticks(watch: TopicWatcher, count: int) -> bool:
    return len({s.doc["data"]["auction_id"] for s in watch.seen}) >= count
