"""At least once, provably: no input is committed before everything it caused is in Kafka,
nothing Kafka acknowledged is lost, and no id ever stands for two contents. Crashes are kill -9
of a worker while it folds; broker failures stop the leaders under it until writes fail."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from functools import partial
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError

from infra.kafka_server import KafkaCluster
from infra.redis_server import RedisServer
from streams import events as ev
from streams import topics
from streams.changelog import read_table
from streams.replay import Progress, Window, read_inputs, reprocess
from streams.topic_admin import TopicPlan, described_by_every_broker, ensure_topics
from tests.support.committed import committed_to_end
from tests.support.events import now_ms, record
from tests.support.kafka import TopicWatcher, kafka_io, produce
from tests.support.ledger import discrepancies
from tests.support.stack import APP_ID, Stack
from tests.support.waiting import eventually

# Every bid extends: a window longer than the auction and an extension past the current end.
EXTENDING = ev.Policy(soft_close_window_ms=3_600_000, extension_ms=4_000, max_extension_ms=86_400_000)


class BidStream:
    """Extending bids, round robin over `auctions`, at `rate` a second; counts Kafka's acks."""

    def __init__(self, producer: AIOKafkaProducer, auctions: list[str], rate: float) -> None:
        self.producer, self.auctions, self.rate = producer, auctions, rate
        self.acked = 0
        self.failed = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        n = 0
        while True:
            rec = record(ev.BidPlaced(self.auctions[n % len(self.auctions)], f"bid-{n}", "u", "1", now_ms()))
            future = await self.producer.send(rec.topic, rec.value, key=rec.key)
            future.add_done_callback(self._count)
            n += 1
            await asyncio.sleep(1 / self.rate)  # the load's pace

    def _count(self, future: asyncio.Future[object]) -> None:
        if future.exception() is None:
            self.acked += 1
        else:
            self.failed += 1

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        with contextlib.suppress(KafkaError):
            await self.producer.flush()


def timer_events(watch: TopicWatcher) -> dict[str, dict[str, set[bytes]]]:
    out: dict[str, dict[str, set[bytes]]] = defaultdict(lambda: defaultdict(set))
    for seen in watch.seen:
        if seen.topic == topics.TIMER_EVENTS:
            out[seen.doc["data"]["auction_id"]][seen.doc["id"]].add(orjson.dumps(seen.doc))
    return out


async def test_kill_9_while_folding_loses_nothing_and_repeats_nothing_differently(stack: Stack) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"seed {seed}")
    worker = stack.start_worker("w", AUCTION_TIMER_WORKER_ID="crashy")
    watched = (topics.TIMER_EVENTS, topics.AUDIT, topics.ANALYTICS)
    async with kafka_io(stack.kafka.bootstrap, *watched) as (producer, watch):
        base = now_ms()
        auctions = [f"crash-{i}" for i in range(30)]
        await produce(producer, *(record(ev.AuctionStarted(a, base, base + 4_000, EXTENDING, "m")) for a in auctions))
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "registered", 60, count=30)
        bids = BidStream(producer, auctions, rate=150)  # every auction gets a bid every 0.2 s
        bids.start()
        for round_ in range(3):
            # Busy: let it fold a random stretch of the stream, then kill it mid-work.
            await eventually(partial(_reached, bids, bids.acked + rng.randint(150, 600)), 60, "more bids in Kafka")
            folded = len(watch.docs(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "extended"))
            assert folded > 0 or round_ > 0, "the worker was idle"
            worker.kill()
            worker = stack.start_worker("w", AUCTION_TIMER_WORKER_ID="crashy")
        await eventually(partial(_reached, bids, bids.acked + 300), 60, "bids after the last restart")
        await bids.stop()
        # Stop bidding: every auction completes 4 s after its last bid.
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed", 120, count=30)
        await eventually(lambda: _no_discrepancy(stack.kafka.bootstrap), 60, "every owed record published")

        events = timer_events(watch)
        audits = {
            (d["data"]["auction_id"], d["data"]["version"], d["data"]["action"]) for d in watch.docs(topics.AUDIT)
        }
        tracked = {d["messageId"] for d in watch.docs(topics.ANALYTICS)}
        for auction in auctions:
            by_id = events[auction]
            assert all(len(contents) == 1 for contents in by_id.values()), f"{auction}: an id with two contents"
            versions = sorted(orjson.loads(next(iter(c)))["data"]["version"] for c in by_id.values())
            assert versions == list(range(1, versions[-1] + 1)), f"{auction}: versions {versions}"
            assert f"{auction}:completed" in by_id
            for contents in by_id.values():
                doc = orjson.loads(next(iter(contents)))
                if doc["data"]["kind"] == "extended":
                    version = doc["data"]["version"]
                    assert f"{auction}:auction_timer_extended:v{version}" in tracked
                    assert (auction, version, "extended") in audits
        total = sum(len(v) for v in events.values())
        print(f"{bids.acked} bids acknowledged, {total} timer-event ids, 3 kills; seed {seed}")


async def _reached(bids: BidStream, target: int) -> bool:
    return bids.acked >= target


async def _no_discrepancy(bootstrap: str) -> bool:
    problems = await discrepancies(bootstrap)
    if problems:
        print(problems[:5])
    return not problems


async def leader_of(bootstrap: str, topic: str, partition: int) -> int:
    [described] = await described_by_every_broker(bootstrap, [topic])
    [info] = [p for p in described["partitions"] if p["partition"] == partition]
    return int(info["leader"])


@pytest.mark.slow
async def test_brokers_failing_under_the_worker_hold_inputs_and_lose_nothing(
    kafka3: KafkaCluster, redis_server: RedisServer, tmp_path: Path, key_prefix: str
) -> None:
    """Three brokers (RF 3, min.insync.replicas 2). Mid-stream the leader of the changelog and
    of the outputs stops, then a second broker, so that writes fail for a while; then both come
    back. Every input ends up committed, and every record each input caused is in Kafka with the
    one content the log determines; the worker reported the partitions it held."""
    stack = Stack(kafka3, redis_server, tmp_path, key_prefix)
    try:
        worker = stack.start_worker()
        async with kafka_io(kafka3.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
            base = now_ms()
            auctions = [f"rf3-{i}" for i in range(16)]
            await produce(
                producer, *(record(ev.AuctionStarted(a, base, base + 4_000, EXTENDING, "m")) for a in auctions)
            )
            await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "registered", 90, count=16)
            bids = BidStream(producer, auctions, rate=60)
            bids.start()
            await eventually(partial(_reached, bids, 100), 60, "the stream under way")
            changelog = topics.changelog_topic(APP_ID)
            first = await leader_of(kafka3.bootstrap, changelog, 0)
            events_leader = await leader_of(kafka3.bootstrap, topics.TIMER_EVENTS, 0)
            second = (
                events_leader if events_leader != first else next(n.node_id for n in kafka3.nodes if n.node_id != first)
            )
            stopped = [n for n in kafka3.nodes if n.node_id in (first, second)]
            [one, two] = stopped
            assert one.process is not None and two.process is not None
            one.process.kill()  # the leaders move; with two in-sync replicas left, writes go on
            await eventually(partial(_reached, bids, bids.acked + 100), 90, "bids with one broker down")
            two.process.kill()  # one broker left: below min.insync.replicas, every write fails
            await eventually(partial(_logged, worker.log_path, "holding partition"), 90, "a held partition")
            for node in stopped:
                kafka3.start_node(node)
            await asyncio.to_thread(kafka3.wait_ready, 90.0, 3)
            await eventually(partial(_reached, bids, bids.acked + 200), 120, "bids after the brokers came back")
            await bids.stop()
            await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed", 180, count=16)
            await eventually(partial(committed_to_end, kafka3.bootstrap), 120, "every input committed")
            await eventually(partial(_no_discrepancy, kafka3.bootstrap), 60, "every owed record published")
            records, partitions = await read_inputs(kafka3.bootstrap, Window(), None, Progress())
            assert reprocess(records, partitions, 65_536).states == await read_table(kafka3.bootstrap, APP_ID)
            print(f"{bids.acked} bids acknowledged ({bids.failed} refused while the brokers were down)")
    finally:
        stack.stop_all()


async def _sent(producer: AIOKafkaProducer, value: bytes, key: bytes) -> bool:
    await producer.send_and_wait(topics.BID_PLACED, value, key=key)
    return True


async def _count_at_least(path: Path, text: str, count: int) -> bool:
    return (await asyncio.to_thread(path.read_text)).count(text) >= count


async def _logged(path: Path, text: str) -> bool:
    return text in await asyncio.to_thread(path.read_text)


async def set_topic_config(bootstrap: str, topic: str, **config: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.alter_configs([ConfigResource(ConfigResourceType.TOPIC, topic, configs=config)])
    finally:
        await admin.close()


async def committed(bootstrap: str, topic: str) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(APP_ID)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta is not None}


@pytest.mark.parametrize("refusing", ["audit", "changelog"])
async def test_records_kafka_refuses_hold_their_inputs_until_it_takes_them(stack: Stack, refusing: str) -> None:
    """The audit topic, or the table's changelog, refuses every record (max.message.bytes below
    their size: a permanent error). The bids that caused those records are not committed (their
    timer events are out already), the refusal is reported as permanent, and once the topic
    takes records again everything owed is published and the bids are committed."""
    refused = topics.AUDIT if refusing == "audit" else topics.changelog_topic(APP_ID)
    worker = stack.start_worker()
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        base = now_ms()
        auctions = [f"refused-{i}" for i in range(8)]
        policy = ev.Policy(soft_close_window_ms=3_600_000, extension_ms=60_000, max_extension_ms=86_400_000)
        await produce(producer, *(record(ev.AuctionStarted(a, base, base + 30_000, policy, "m")) for a in auctions))
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "registered", 60, count=8)
        await eventually(partial(committed_to_end, stack.kafka.bootstrap), 60, "the registrations committed")
        before = await committed(stack.kafka.bootstrap, topics.BID_PLACED)
        await set_topic_config(stack.kafka.bootstrap, refused, **{"max.message.bytes": "64"})
        await produce(producer, *(record(ev.BidPlaced(a, f"b-{a}", "u", "1", now_ms())) for a in auctions))
        await eventually(partial(_logged, worker.log_path, "MessageSizeTooLarge"), 60, "the audit records refused")
        # The extensions' timer events went out; their inputs still may not be committed.
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "extended", 30, count=8)
        # Retries back off 0.2, 0.4, 0.8, 1.6 s: four refusals span several of Faust's 0.5 s commits.
        await eventually(partial(_count_at_least, worker.log_path, '"kind":"permanent"', 4), 60, "four refusals")
        assert await committed(stack.kafka.bootstrap, topics.BID_PLACED) == before
        await set_topic_config(stack.kafka.bootstrap, refused, **{"max.message.bytes": "1048588"})
        await eventually(partial(committed_to_end, stack.kafka.bootstrap), 90, "the bids committed")
        await eventually(partial(_no_discrepancy, stack.kafka.bootstrap), 60, "every owed record published")
        table = await read_table(stack.kafka.bootstrap, APP_ID)
        assert {a: table[a].extension_count for a in auctions} == dict.fromkeys(auctions, 1)
        assert worker.running()


async def test_inputs_of_any_size_end_in_the_dlq_and_the_worker_goes_on(stack: Stack) -> None:
    """A 1 MiB value of NUL bytes (6 MB once JSON-escaped) and a 700 KB key: each gets a bounded
    DLQ record saying what it left out, and a valid event after them is folded."""
    stack.start_worker(AUCTION_TIMER_MAX_EVENT_BYTES="1048576")
    async with kafka_io(stack.kafka.bootstrap, topics.DLQ, topics.TIMER_EVENTS) as (_, watch):
        # (AlterConfigs replaces a topic's whole config: keep what the worker set.)
        await set_topic_config(
            stack.kafka.bootstrap, topics.BID_PLACED,
            **{"max.message.bytes": "4194304", "message.timestamp.type": "LogAppendTime", "retention.ms": "-1"},
        )  # fmt: skip
        big = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap, max_request_size=4_194_304, acks="all")
        await big.start()
        try:
            # The broker applies the new limit a moment after it answered the change.
            await eventually(partial(_sent, big, b"\x00" * 1_048_576, b"nul-1"), 30, "the larger limit in force")
            await big.send_and_wait(topics.BID_PLACED, b"{}", key=b"k" * 700_000)
            start = now_ms()
            await produce(big, record(ev.AuctionStarted("after-big", start, start + 60_000, EXTENDING, "m")))
        finally:
            await big.stop()
        dead = await watch.wait_for(topics.DLQ, lambda d: True, 60, count=2)
        by_reason = {d["data"]["reason"]: d["data"] for d in dead}
        assert set(by_reason) == {"not_json", "key_mismatch"}  # exactly at the 1 MiB limit: read, not JSON
        for letter in by_reason.values():
            assert letter["truncated"] is True
        assert by_reason["not_json"]["size"] == 1_048_576
        assert len(by_reason["key_mismatch"]["key"]) <= 256
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["auction_id"] == "after-big", 60)


async def test_an_upstream_writing_in_transactions_is_folded_as_committed_and_committed_to_the_end(
    stack: Stack,
) -> None:
    """Registrations and bids from a transactional producer, one transaction aborted: the worker
    folds what was committed and never what was aborted, its commit moves over the transaction
    markers to each partition's end, and replay reaches the same table."""
    await ensure_topics(TopicPlan(stack.kafka.bootstrap, 8, 0, APP_ID))
    stack.start_worker()
    upstream = AIOKafkaProducer(bootstrap_servers=stack.kafka.bootstrap, transactional_id="upstream-tx")
    await upstream.start()
    try:
        async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (_, watch):
            base = now_ms()
            auctions = [f"tx-{i}" for i in range(8)]
            policy = ev.Policy(soft_close_window_ms=3_600_000, extension_ms=600_000, max_extension_ms=3_600_000)

            async def transaction(*payloads: ev.Payload, abort: bool = False) -> None:
                await upstream.begin_transaction()
                for payload in payloads:
                    rec = record(payload)
                    await upstream.send(rec.topic, rec.value, key=rec.key)
                await (upstream.abort_transaction() if abort else upstream.commit_transaction())

            await transaction(*(ev.AuctionStarted(a, base, base + 300_000, policy, "m") for a in auctions))
            await transaction(*(ev.BidPlaced(a, f"ok-{a}", "u", "1", base + 1) for a in auctions))
            # Aborted: had it been folded, the later committed bids could not extend (base+2 < base+3).
            await transaction(*(ev.BidPlaced(a, f"aborted-{a}", "u", "1", base + 3) for a in auctions), abort=True)
            await transaction(*(ev.BidPlaced(a, f"late-{a}", "u", "1", base + 2) for a in auctions))

            await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "extended", 90, count=16)
            await eventually(partial(committed_to_end, stack.kafka.bootstrap), 60, "every input committed to its end")
            table = await read_table(stack.kafka.bootstrap, APP_ID)
            assert {a: (table[a].extension_count, table[a].ends_at_ms) for a in auctions} == dict.fromkeys(
                auctions, (2, base + 2 + 600_000)
            )
            records, partitions = await read_inputs(stack.kafka.bootstrap, Window(), None, Progress())
            assert reprocess(records, partitions, 65_536).states == table
    finally:
        await upstream.stop()
