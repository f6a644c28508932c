"""Hypothesis fuzzes a running worker and gateway through Kafka: random bytes, keys, headers and
partitions, JSON of any shape, envelopes with random data and valid events keyed or placed wrong,
on every input topic and on the ticks topic the gateway reads. Every record gets its answer before
the next batch: a DLQ record naming its position (worker) or a counted skip (gateway). Afterwards
both are healthy and a valid registration is folded and reaches a WebSocket. The run is bounded
(FUZZ_BUDGET_S of generation, then the checks): about a minute with the stack's start-up."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass

import aiohttp
import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from streams import events as ev
from streams import outputs, topics
from tests.support.events import now_ms, record
from tests.support.gateway import Recorder
from tests.support.kafka import kafka_io, produce
from tests.support.stack import Stack
from tests.support.waiting import eventually

FUZZ_BUDGET_S = 40
FUZZED_TOPICS = (*topics.INPUT_TOPICS, topics.TICKS)
TYPES = (ev.AUCTION_STARTED, ev.BID_PLACED, ev.AUCTION_CANCELLED, ev.EXPIRE_TIMER, ev.START_TIMER, ev.RECONCILE,
         outputs.TICK_TYPE)  # fmt: skip


@dataclass(frozen=True)
class Fuzzed:
    topic: str
    key: bytes | None
    value: bytes | None
    partition: int | None
    headers: list[tuple[str, bytes]]

    def __repr__(self) -> str:  # a failing batch printed whole could be megabytes
        def cut(data: bytes | None) -> str:
            return "None" if data is None else f"{data[:60]!r}({len(data)} bytes)"

        return (
            f"Fuzzed({self.topic}, key={cut(self.key)}, value={cut(self.value)}, partition={self.partition}, "
            f"headers={self.headers!r:.200})"
        )


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=5),
    max_leaves=12,
)


@st.composite
def envelopes(draw: st.DrawFn) -> bytes:
    """A CloudEvents envelope of one of our types whose data is anything."""
    doc = {"specversion": "1.0", "id": draw(st.text(max_size=40)), "type": draw(st.sampled_from(TYPES)),
           "source": "fuzz", "time": "2026-11-30T10:00:00Z", "data": draw(json_values)}  # fmt: skip
    return orjson.dumps(doc)


@st.composite
def misplaced(draw: st.DrawFn) -> tuple[str, bytes, bytes]:
    """A valid event, on a topic other than its own or keyed by something else than its auction."""
    auction = draw(st.from_regex(r"fz-[a-z0-9]{1,12}", fullmatch=True))
    now = now_ms()
    payloads: list[ev.Payload] = [
        ev.AuctionStarted(auction, now, now + 60_000, ev.Policy(1_000, 1_000, 5_000), "m"),
        ev.BidPlaced(auction, "b-1", "bidder", "1.00", now),
        ev.AuctionCancelled(auction, "fraud", "ops"),
        ev.ExpireTimer(auction, 1, now),
    ]
    trace = draw(st.from_regex(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01", fullmatch=True))
    valid = outputs.input_record(draw(st.sampled_from(payloads)), draw(st.uuids()).hex, now, trace, "fuzz")
    if draw(st.booleans()):
        return draw(st.sampled_from([t for t in topics.INPUT_TOPICS if t != valid.topic])), valid.key, valid.value
    key = draw(st.binary(min_size=1, max_size=40).filter(lambda k: k != valid.key))
    return valid.topic, key, valid.value


@st.composite
def fuzzed(draw: st.DrawFn) -> Fuzzed:
    topic = draw(st.sampled_from(FUZZED_TOPICS))
    key = draw(st.none() | st.binary(max_size=80) | st.just(b"k" * 700_000))
    value = draw(st.none() | st.binary(max_size=600) | json_values.map(orjson.dumps) | envelopes())
    if key is None or len(key) < 1_000:  # a huge key and a huge value together are over Kafka's limit
        value = draw(st.just(value) | st.just(b"\0" * 600_000) | st.binary(min_size=70_000, max_size=70_000))
    if topic != topics.TICKS and draw(st.integers(0, 3)) == 0:
        topic, key, value = draw(misplaced())
    if key is None and value is None:
        value = b""  # a record needs one of them (aiokafka)
    header = st.tuples(st.text(st.characters(codec="utf-8"), max_size=16), st.binary(max_size=64))
    return Fuzzed(topic, key, value, draw(st.none() | st.integers(0, 7)), draw(st.lists(header, max_size=3)))


async def feed_skipped(session: aiohttp.ClientSession, base: str) -> float:
    text = await (await session.get(f"{base}/metrics")).text()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "auctions_gateway_feed_skipped_total" and sample.labels["topic"] == topics.TICKS
    )


# Hypothesis generates in a thread while this loop's Kafka clients use `random` (node choice, jitter);
# it takes their draws for its own strategies'.
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
async def test_fuzzed_records_are_dead_lettered_or_skipped_and_both_stay_healthy(stack: Stack) -> None:
    worker = stack.start_worker()
    _, base = stack.start_gateway()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session, kafka_io(stack.kafka.bootstrap, topics.DLQ) as (producer, watch):
        inputs_sent: set[str] = set()
        ticks_sent = [0]
        skipped_before = await feed_skipped(session, base)

        def dead_lettered() -> set[str]:
            return {doc["id"] for doc in watch.docs(topics.DLQ)}

        async def send_and_check(batch: list[Fuzzed]) -> None:
            sent = set()
            for item in batch:
                meta = await producer.send_and_wait(
                    item.topic, item.value, key=item.key, partition=item.partition, headers=item.headers
                )
                if item.topic == topics.TICKS:
                    ticks_sent[0] += 1
                else:
                    sent.add(f"{item.topic}:{meta.partition}:{meta.offset}")
            inputs_sent.update(sent)
            what = f"DLQ records of {sorted(sent)} from {batch}"
            await eventually(lambda: asyncio.sleep(0, result=sent <= dead_lettered()), 30, what)
            want = skipped_before + ticks_sent[0]

            async def counted() -> bool:
                return await feed_skipped(session, base) >= want

            await eventually(counted, 30, f"{want} skipped ticks after {batch}")
            assert await feed_skipped(session, base) == want

        stop_at = time.monotonic() + FUZZ_BUDGET_S
        batches = [0]

        # No shrinking: each failing attempt would wait out its timeouts; the falsifying batch is printed.
        @settings(max_examples=400, deadline=None, database=None, phases=(Phase.generate,),
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        @given(st.lists(fuzzed(), min_size=1, max_size=4))
        def one_batch(batch: list[Fuzzed]) -> None:
            if time.monotonic() < stop_at:
                asyncio.run_coroutine_threadsafe(send_and_check(batch), loop).result()
                batches[0] += 1

        await asyncio.to_thread(one_batch)
        assert batches[0] >= 20, f"only {batches[0]} batches in {FUZZ_BUDGET_S}s"
        assert dead_lettered() == inputs_sent  # one answer each, and nothing else dead-lettered

        # Both still healthy, and a valid registration after the fuzz is folded and reaches a socket.
        assert worker.running()
        assert await (await session.get(f"{base}/readyz")).json() == {"kafka": True, "redis": True}
        auction = f"after-fuzz-{uuid.uuid4().hex[:8]}"
        socket = Recorder(await session.ws_connect(base.replace("http", "ws") + f"/auctions/{auction}/updates"))
        socket.start()
        await eventually(lambda: asyncio.sleep(0, result=socket.of_type("snapshot")), 10, "the snapshot")
        start = now_ms()
        await produce(producer, record(ev.AuctionStarted(auction, start, start + 600_000, ev.Policy(1, 1, 1), "m")))
        [registered] = await eventually(lambda: asyncio.sleep(0, result=socket.of_type("registered")), 30, "registered")
        assert (registered["version"], registered["ends_at_ms"]) == (1, start + 600_000)
        await socket.stop()
    print(f"fuzz: {batches[0]} batches, {len(inputs_sent)} input records dead-lettered, {ticks_sent[0]} ticks skipped")
