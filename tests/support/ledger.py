"""What the worker owes and what it published: the records every input in the log must cause
(computed by replaying the worker's own processor over the inputs, in the log's order) and the
records the output topics hold. Content is deterministic, so the two must match byte for byte."""

from __future__ import annotations

from collections import defaultdict

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import topics
from streams.log_range import read_range
from streams.processor import TimerProcessor
from streams.replay import MemoryStates, Progress, Window, in_log_order, read_inputs
from streams.topic_admin import partition_counts

OWED_TOPICS = (topics.TIMER_EVENTS, topics.AUDIT, topics.ANALYTICS, topics.DLQ)
RECONCILER = "urn:auction-timer:reconciler"


def record_id(topic: str, value: bytes) -> str:
    doc = orjson.loads(value)
    return str(doc["messageId"] if topic == topics.ANALYTICS else doc["id"])


async def owed(bootstrap: str, max_event_bytes: int = 65_536) -> dict[tuple[str, str], bytes]:
    """(topic, id) -> content of every record the inputs in the log cause."""
    inputs, partitions = await read_inputs(bootstrap, Window(), None, Progress())
    processor = TimerProcessor(MemoryStates(), partitions, max_event_bytes)
    out: dict[tuple[str, str], bytes] = {}
    for msg in in_log_order(inputs):
        for rec in processor.process(msg).records:
            out[(rec.topic, record_id(rec.topic, rec.value))] = rec.value
    return out


async def published(bootstrap: str) -> dict[tuple[str, str], set[bytes]]:
    """(topic, id) -> every distinct content published under it (the reconciler's entries left out)."""
    counts = await partition_counts(bootstrap, list(OWED_TOPICS))
    tps = [TopicPartition(t, p) for t in OWED_TOPICS for p in range(counts.get(t, 0))]
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        out: dict[tuple[str, str], set[bytes]] = defaultdict(set)
        async for tp, records in read_range(consumer, starts, ends, 30_000):
            for r in records:
                if r.value is None or (tp.topic == topics.AUDIT and orjson.loads(r.value)["source"] == RECONCILER):
                    continue
                out[(tp.topic, record_id(tp.topic, r.value))].add(r.value)
        return out
    finally:
        await consumer.stop()


async def discrepancies(bootstrap: str) -> list[str]:
    """Every owed record published exactly as owed, and nothing published that is not owed."""
    want, have = await owed(bootstrap), await published(bootstrap)
    problems = []
    for key, value in want.items():
        if have.get(key) != {value}:
            problems.append(f"{key}: owed 1 content, published {len(have.get(key, ()))}")
    problems += [f"{key}: published, owed by no input" for key in have.keys() - want.keys()]
    return problems
