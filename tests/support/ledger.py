"""What the worker owes and what it published: the records every input in the log must cause
(computed by replaying the worker's own processor over the inputs, in the log's order) and the
records the output topics hold. Content is deterministic, so the two must match byte for byte.
The ingest benchmark holds its peers to the same ledger, each in its own topic namespace."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import topics
from streams.log_range import read_range
from streams.processor import TimerProcessor
from streams.replay import MemoryStates, Progress, Window, in_log_order, read_inputs
from streams.state import TimerState
from streams.topic_admin import partition_counts

OWED_TOPICS = (topics.TIMER_EVENTS, topics.AUDIT, topics.ANALYTICS, topics.DLQ)
RECONCILER = "urn:auction-timer:reconciler"
Owed = dict[tuple[str, str], bytes]


def record_id(topic: str, value: bytes) -> str:
    doc = orjson.loads(value)
    return str(doc["messageId"] if topic == topics.ANALYTICS else doc["id"])


@dataclass
class Replayed:
    owed: Owed  # (topic, id) -> content of every record the inputs cause
    states: dict[bytes, TimerState]  # the table after the last input: what a changelog must end with


async def replay(bootstrap: str, max_event_bytes: int = 65_536) -> Replayed:
    inputs, partitions = await read_inputs(bootstrap, Window(), None, Progress())
    table = MemoryStates()
    processor = TimerProcessor(table, partitions, max_event_bytes)
    out: Owed = {}
    for msg in in_log_order(inputs):
        for rec in processor.process(msg).records:
            out[(rec.topic, record_id(rec.topic, rec.value))] = rec.value
    return Replayed(out, table.states)


async def owed(bootstrap: str, max_event_bytes: int = 65_536) -> Owed:
    """(topic, id) -> content of every record the inputs in the log cause."""
    return (await replay(bootstrap, max_event_bytes)).owed


async def read_all(bootstrap: str, names: list[str]) -> dict[str, list[tuple[bytes | None, bytes | None]]]:
    """Every record (key, value) of the topics `names`, each partition in offset order."""
    counts = await partition_counts(bootstrap, names)
    tps = [TopicPartition(t, p) for t in names for p in range(counts.get(t, 0))]
    out: dict[str, list[tuple[bytes | None, bytes | None]]] = defaultdict(list)
    if not tps:
        return out
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        consumer.assign(tps)
        starts = await consumer.beginning_offsets(tps)
        ends = await consumer.end_offsets(tps)
        async for tp, records in read_range(consumer, starts, ends, 30_000):
            out[tp.topic] += [(r.key, r.value) for r in records]
        return out
    finally:
        await consumer.stop()


async def published(bootstrap: str, prefix: str = "") -> dict[tuple[str, str], set[bytes]]:
    """(topic, id) -> every distinct content published under it (the reconciler's entries left
    out), read from the output topics named `prefix` + the contract's name."""
    records = await read_all(bootstrap, [prefix + t for t in OWED_TOPICS])
    out: dict[tuple[str, str], set[bytes]] = defaultdict(set)
    for name, pairs in records.items():
        topic = name.removeprefix(prefix)
        for _, value in pairs:
            if value is None or (topic == topics.AUDIT and orjson.loads(value)["source"] == RECONCILER):
                continue
            out[(topic, record_id(topic, value))].add(value)
    return out


def compare(want: Owed, have: dict[tuple[str, str], set[bytes]]) -> list[str]:
    """Every owed record published exactly as owed, and nothing published that is not owed."""
    problems = []
    for key, value in want.items():
        if have.get(key) != {value}:
            problems.append(f"{key}: owed 1 content, published {len(have.get(key, ()))}")
    problems += [f"{key}: published, owed by no input" for key in have.keys() - want.keys()]
    return problems


async def discrepancies(bootstrap: str) -> list[str]:
    return compare(await owed(bootstrap), await published(bootstrap))


async def changelog(
    bootstrap: str, topic: str, key_of: Callable[[bytes], bytes] = bytes
) -> tuple[int, dict[bytes, bytes]]:
    """How many records changelog `topic` holds, and its last value per key (`key_of` turns a
    record key into the auction id)."""
    pairs = (await read_all(bootstrap, [topic]))[topic]
    return len(pairs), {key_of(k): v for k, v in pairs if k is not None and v is not None}
