"""Replay over years: it refuses a window the topics' retention no longer holds (never a quietly
different answer), and rebuilds the projection from the table's changelog plus the inputs after
it, equal to the live projection, when the old inputs are gone."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid

import redis.asyncio as aioredis
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete

from projections.keys import Keys
from streams import events as ev
from streams import topics
from streams.changelog import read_table
from tests.support.committed import committed_to_end, end_offsets_by_partition
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce
from tests.support.projection import mismatches
from tests.support.stack import APP_ID, ROOT, Stack
from tests.support.waiting import eventually

# A bid placed at t + 100 moves an end of t + 30 s to t + 60.1 s.
EXTENDING = ev.Policy(soft_close_window_ms=60_000, extension_ms=60_000, max_extension_ms=120_000)


def replay(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app.cli", "replay", *args],
        env=stack.env(), capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip


async def test_a_truncated_log_is_refused_and_the_changelog_plus_tail_rebuilds_redis(stack: Stack) -> None:
    worker = stack.start_worker()
    assert stack.redis is not None
    client = aioredis.Redis.from_url(stack.redis.url, decode_responses=True)
    live = Keys(stack.key_prefix)
    try:
        async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
            t = now_ms()
            auctions = [f"years-{i}" for i in range(12)]
            await produce(producer, *(record(ev.AuctionStarted(a, t, t + 30_000, EXTENDING, "m")) for a in auctions))
            await produce(producer, *(record(ev.BidPlaced(a, f"b-{a}", "u", "1", t + 100)) for a in auctions))
            await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "extended", 60, count=12)
            await eventually(lambda: committed_to_end(stack.kafka.bootstrap), 60, "every input committed")

            # Retention deletes the registrations and bids (what a year-old topic would have lost).
            admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka.bootstrap)
            await admin.start()
            try:
                for topic in (topics.AUCTION_STARTED, topics.BID_PLACED):
                    ends = await end_offsets_by_partition(stack.kafka.bootstrap, topic)
                    await admin.delete_records({tp: RecordsToDelete(end) for tp, end in ends.items() if end})
            finally:
                await admin.close()
            # An input after the deletion: the tail after the changelog.
            await produce(producer, record(ev.AuctionCancelled("years-3", "withdrawn", "admin")))
            await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "cancelled", 60)

            # The changelog is written after the change's records, so read it until it has the cancel.
            table = await eventually(lambda: _settled(stack, client, live, auctions), 30, "the table and projection")
        worker.stop()

        refused = await asyncio.to_thread(replay, stack, "--verify")
        assert refused.returncode == 2, refused.stderr
        assert "retention deleted" in refused.stderr and "--from-changelog" in refused.stderr
        later = await asyncio.to_thread(replay, stack, "--from", "1970-01-01T00:00:00Z")
        assert later.returncode == 2 and "retention deleted" in later.stderr

        verified = await asyncio.to_thread(replay, stack, "--from-changelog", "--verify")
        assert verified.returncode == 0, verified.stdout + verified.stderr
        fresh = f"test:{uuid.uuid4().hex[:8]}:"
        rebuilt = await asyncio.to_thread(
            replay, stack, "--from-changelog", "--rebuild-redis", stack.redis.url, "--prefix", fresh
        )
        assert rebuilt.returncode == 0, rebuilt.stderr
        assert await mismatches(client, Keys(fresh), table) == []
        assert table["years-3"].status == "cancelled" and table["years-4"].extension_count == 1
    finally:
        await client.aclose()


async def _settled(stack: Stack, client: aioredis.Redis, keys: Keys, auctions: list[str]) -> dict:
    """The table once it holds the cancel and Redis matches it (empty until then)."""
    table = {a: s for a, s in (await read_table(stack.kafka.bootstrap, APP_ID)).items() if a in auctions}
    if len(table) != 12 or table["years-3"].status != "cancelled" or await mismatches(client, keys, table):
        return {}
    return table
