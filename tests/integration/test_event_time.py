"""Event time against real Kafka: the log decides, never arrival order or a worker's clock.

Last-second bids (placed 30 ms and 5 ms before the end, sent 200 ms before it) race the
completion while a storm of ordinary bids keeps the worker busy; the expected outcome of
every auction is computed from the broker's own timestamp of its bid, read from Kafka's ack:
a bid the log took before the deadline must extend the auction, one it took after must not.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict

import pytest

from bench.metrics_scrape import scrape
from infra.ports import free_port
from streams import events as ev
from streams import topics
from streams.changelog import read_table
from streams.replay import Progress, Window, read_inputs, reprocess
from streams.topic_admin import TopicPlan, ensure_topics
from tests.support.committed import committed_to_end, end_offsets
from tests.support.events import now_ms, record
from tests.support.kafka import TopicWatcher, kafka_io, produce
from tests.support.stack import APP_ID, Stack
from tests.support.storm import Snipe, snipe, storming
from tests.support.waiting import eventually

QUIET = ev.Policy(soft_close_window_ms=1_000, extension_ms=2_000, max_extension_ms=60_000)
TARGET = ev.Policy(soft_close_window_ms=1_000, extension_ms=2_000, max_extension_ms=60_000)
ORDINARY, TARGETS = 500, 60
STORM_BIDS = 24_000


def by_auction(watch: TopicWatcher, topic: str, kind: str | None = None) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = defaultdict(list)
    for doc in watch.docs(topic):
        data = doc["data"]
        if kind is None or data.get("kind") == kind:
            out[data["auction_id"]].append(doc)
    return out


def one_content_per_id(docs: list[dict]) -> dict:
    """Redelivery may publish a record twice; never two contents under one id."""
    assert len({orjson_key(d) for d in docs}) == 1, docs
    return docs[0]


def orjson_key(doc: dict) -> str:
    import orjson

    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS).decode()


async def register(producer, watch: TopicWatcher, ends: dict[str, int], policy: ev.Policy, starts: int) -> None:
    await produce(producer, *(record(ev.AuctionStarted(a, starts, e, policy, "m")) for a, e in ends.items()))
    await watch.wait_for(
        topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "registered" and d["data"]["auction_id"] in ends,
        120, count=len(ends),
    )  # fmt: skip


async def storm_against_last_second_bids(stack: Stack, kill: str | None) -> None:
    """`kill`: None, "restart-at-once" (killed under the storm and started again at once, so it
    recovers while the deadlines come), or "restart-after-deadlines" (down until every deadline
    passed, so on its return overdue completions meet a backlog of bids)."""
    worker = stack.start_worker("w", AUCTION_TIMER_WORKER_ID="storm-worker")
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS, topics.AUDIT) as (producer, watch):
        ready = now_ms()
        quiet = {f"quiet-{i}": ready + 3_600_000 for i in range(ORDINARY)}
        await register(producer, watch, quiet, QUIET, ready)
        # Deadlines derived from readiness: far enough out to register and start the storm.
        first_end = now_ms() + 8_000
        ends = {f"target-{i}": first_end + 50 * i for i in range(TARGETS)}
        await register(producer, watch, ends, TARGET, now_ms())
        snipes = [Snipe(a, e - (30 if i % 2 else 5)) for i, (a, e) in enumerate(ends.items())]
        async with storming(producer, list(quiet), STORM_BIDS) as storm:
            shots = [asyncio.create_task(snipe(producer, s, ends[s.auction_id] - 200)) for s in snipes]
            if kill is not None:
                await eventually(lambda: _true(storm.sent > STORM_BIDS // 3), 60, "the storm under way")
                worker.kill()  # SIGKILL while it folds the storm, before the deadlines
                if kill == "restart-at-once":
                    stack.start_worker("w", AUCTION_TIMER_WORKER_ID="storm-worker")
            await asyncio.gather(*shots)
            await eventually(lambda: _true(storm.sent >= STORM_BIDS), 120, "the whole storm in Kafka")
        if kill == "restart-after-deadlines":
            last_end = max(ends.values())
            await eventually(lambda: _true(now_ms() > last_end + 2_000), 60, "every deadline to pass while down")
            stack.start_worker("w", AUCTION_TIMER_WORKER_ID="storm-worker")

        completed = await eventually(lambda: _done(watch, ends), 180, f"{TARGETS} completions after the storm")
        extended = by_auction(watch, topics.TIMER_EVENTS, "extended")
        late = {d["data"]["auction_id"] for d in watch.docs(topics.AUDIT) if d["data"]["reason"] == "late_bid"}
        in_time = [s for s in snipes if s.log_ms < ends[s.auction_id]]
        for shot in snipes:
            auction, end = shot.auction_id, ends[shot.auction_id]
            done = one_content_per_id(completed[auction])["data"]
            if shot.log_ms < end:  # Kafka took the bid before the deadline: it must have extended
                ext = one_content_per_id(extended[auction])["data"]
                assert ext["ends_at_ms"] == shot.placed_ms + TARGET.extension_ms, auction
                assert (done["version"], done["ends_at_ms"]) == (3, ext["ends_at_ms"]), auction
            else:  # the log took it after the deadline: a late bid, never an extension
                assert auction not in extended and auction in late, auction
                assert (done["version"], done["ends_at_ms"]) == (2, end), auction
            assert done["ended_at_ms"] >= done["ends_at_ms"], f"{auction} completed early"
        print(f"{len(in_time)}/{TARGETS} last-second bids reached the log before their deadline; all of those "
              f"extended; storm {storm.sent} bids; kill={kill}")  # fmt: skip
        assert in_time, "no bid reached the log before its deadline: the test proved nothing"

        # Replay from the log alone reaches the same table.
        records, partitions = await read_inputs(stack.kafka.bootstrap, Window(), None, Progress())
        replayed = reprocess(records, partitions, 65_536)
        table = await read_table(stack.kafka.bootstrap, APP_ID)
        assert {a: replayed.states[a] for a in ends} == {a: table[a] for a in ends}
        assert replayed.states == table


async def _true(value: bool) -> bool:
    return value


async def _done(watch: TopicWatcher, ends: dict[str, int]) -> dict[str, list[dict]]:
    completed = by_auction(watch, topics.TIMER_EVENTS, "completed")
    return completed if set(completed) >= set(ends) else {}


@pytest.mark.slow
async def test_last_second_bids_extend_however_busy_the_worker_is(stack: Stack) -> None:
    await storm_against_last_second_bids(stack, kill=None)


@pytest.mark.slow
@pytest.mark.parametrize("kill", ["restart-at-once", "restart-after-deadlines"])
async def test_last_second_bids_extend_when_the_worker_was_killed_under_the_storm(stack: Stack, kill: str) -> None:
    await storm_against_last_second_bids(stack, kill=kill)


@pytest.mark.slow
async def test_a_backlog_never_overtakes_its_registrations(stack: Stack) -> None:
    """1,000 registrations and 100,000 valid bids wait in Kafka before the worker starts: none
    is dead-lettered, whatever order the partitions are fetched in."""
    await ensure_topics(TopicPlan(stack.kafka.bootstrap, 8, 0, APP_ID))
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        start = now_ms()
        auctions = [f"backlog-{i}" for i in range(1_000)]
        futures = []
        for a in auctions:
            rec = record(ev.AuctionStarted(a, start, start + 3_600_000, QUIET, "m"))
            futures.append(await producer.send(rec.topic, rec.value, key=rec.key))
        for n in range(100_000):
            rec = record(ev.BidPlaced(auctions[n % 1_000], f"bl-{n}", "u", "1", now_ms()))
            futures.append(await producer.send(rec.topic, rec.value, key=rec.key))
        await asyncio.gather(*futures)
        port = free_port()
        stack.start_worker(AUCTION_TIMER_WORKER_METRICS_PORT=str(port))
        key = f'auctions_timer_events_total{{topic="{topics.BID_PLACED}"}}'

        async def all_folded() -> bool:
            return scrape(f"http://127.0.0.1:{port}/metrics").get(key, 0) >= 100_000

        await eventually(all_folded, 300, "the 100,000 bids folded")
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "registered", 30, count=1_000)
        await eventually(lambda: committed_to_end(stack.kafka.bootstrap), 60, "every input committed")
        assert await end_offsets(stack.kafka.bootstrap, topics.DLQ) == 0  # nothing was ever dead-lettered


async def test_slow_upstream_bids_within_and_beyond_the_allowed_lateness(stack: Stack) -> None:
    """Bids placed before the end that the log took after it: within AUCTION_TIMER_ALLOWED_LATENESS_MS
    they still extend (completion waits for them); beyond it they are audited `late_bid` with both
    times and counted."""
    lateness = 3_000
    port = free_port()
    stack.start_worker(AUCTION_TIMER_ALLOWED_LATENESS_MS=str(lateness), AUCTION_TIMER_WORKER_METRICS_PORT=str(port))
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS, topics.AUDIT) as (producer, watch):
        ready = now_ms()
        end = ready + 4_000
        ends = {"straggler": end, "too-late": end}
        await register(producer, watch, ends, TARGET, ready)
        await eventually(lambda: _true(now_ms() > end + 100), 30, "the deadline to pass")
        within = await snipe(producer, Snipe("straggler", end - 100), now_ms())
        await eventually(lambda: _true(now_ms() > end + lateness + 100), 30, "the allowed lateness to pass")
        beyond = await snipe(producer, Snipe("too-late", end - 100), now_ms())
        assert end < within.log_ms and beyond.log_ms >= end + lateness  # after the end, by the log's clock

        completed = await eventually(lambda: _done(watch, ends), 60, "both completions")
        late_bids = [d["data"] for d in watch.docs(topics.AUDIT) if d["data"]["reason"] == "late_bid"]
        audits = {a["auction_id"]: a for a in late_bids}
        straggler = one_content_per_id(completed["straggler"])["data"]
        # The outcome follows the log's time of the bid (a machine stalled for seconds could make
        # even the first one late; then it must be audited like the second).
        if within.log_ms < end + lateness:
            assert (straggler["version"], straggler["ends_at_ms"]) == (3, within.placed_ms + TARGET.extension_ms)
            assert straggler["ended_at_ms"] >= straggler["ends_at_ms"] + lateness
            assert "straggler" not in audits
        else:
            assert (straggler["version"], straggler["ends_at_ms"]) == (2, end)
            assert audits["straggler"]["detail"]["log_ms"] == within.log_ms
        too_late = one_content_per_id(completed["too-late"])["data"]
        assert (too_late["version"], too_late["ends_at_ms"]) == (2, end)
        audit = audits["too-late"]
        assert (audit["detail"]["placed_at_ms"], audit["detail"]["log_ms"]) == (end - 100, beyond.log_ms)
        assert audit["detail"]["appended_after_end_ms"] == beyond.log_ms - end
        assert scrape(f"http://127.0.0.1:{port}/metrics")["auctions_timer_late_bids_total"] == len(audits)

        # Idle now: the watermark of every partition keeps up with the log by end-offset lookups.
        async def watermarks_current() -> bool:
            lags = {k: v for k, v in scrape(f"http://127.0.0.1:{port}/metrics").items() if "watermark_lag" in k}
            return len(lags) == 8 and max(lags.values()) <= 5_000

        await eventually(watermarks_current, 30, "the watermark lag of an idle worker to stay small")
