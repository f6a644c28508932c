"""Three-node KRaft mode: RF=3 topics take acks=all writes, even with one broker down."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka_server import KafkaCluster
from streams.log_probe import KafkaLogProbe
from streams.topic_admin import described_by_every_broker
from tests.support.waiting import eventually

pytestmark = pytest.mark.slow  # a fault drill: three brokers, one killed


async def test_rf3_topic_accepts_acks_all(kafka3: KafkaCluster) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka3.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("replicated", 4, 3, topic_configs={"min.insync.replicas": "2"})])
    finally:
        await admin.close()
    described = await described_by_every_broker(kafka3.bootstrap, ["replicated"])
    partitions = described[0]["partitions"]
    assert len(partitions) == 4
    assert all(len(p["replicas"]) == 3 for p in partitions)

    producer = AIOKafkaProducer(bootstrap_servers=kafka3.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(20):
            await producer.send_and_wait("replicated", f"{i}".encode(), key=f"{i}".encode())

        # min.insync.replicas=2 still holds with one of three brokers killed.
        victim = kafka3.nodes[2]
        assert victim.process is not None
        victim.process.kill()
        # Leadership moves off the dead broker; a send may fail meanwhile and is retried.
        for i in range(20, 40):
            value = f"{i}".encode()

            async def write(v: bytes = value) -> object:
                return await producer.send_and_wait("replicated", v, key=v)

            await eventually(write, 60, f"acks=all write {i} with one broker down")
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer("replicated", bootstrap_servers=kafka3.nodes[0].bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    values: set[int] = set()
    try:
        async with asyncio.timeout(60):
            while len(values) < 40:
                for records in (await consumer.getmany(timeout_ms=500)).values():
                    values.update(int(r.value) for r in records if r.value is not None)
    finally:
        await consumer.stop()
    assert values == set(range(40))


async def test_the_log_end_counts_a_record_the_followers_do_not_have_yet(kafka3: KafkaCluster) -> None:
    """The worker's end-offset lookup (streams/log_probe.py) answers with the leader's log end: a
    record appended while a follower stands still is below it at once, though no consumer sees
    it (the high watermark waits for the follower, or for `replica.lag.time.max.ms`, 30 s): the
    consumer's lookup, used before, answers 1."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka3.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("lagging", 1, 3)])
    finally:
        await admin.close()
    [described] = await described_by_every_broker(kafka3.bootstrap, ["lagging"])
    [partition] = described["partitions"]
    leader = next(n for n in kafka3.nodes if n.node_id == partition["leader"])
    follower = next(n for n in kafka3.nodes if n.node_id != leader.node_id)
    assert follower.process is not None and follower.process.popen is not None
    # Every client talks to the leader alone: a stopped broker would answer nobody.
    producer = AIOKafkaProducer(bootstrap_servers=leader.bootstrap, acks=1)
    consumer = AIOKafkaConsumer(bootstrap_servers=leader.bootstrap)  # its lookup: the high watermark
    probe = KafkaLogProbe(leader.bootstrap, "lagging-group")
    tp = TopicPartition("lagging", 0)
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait("lagging", b"replicated")

        async def followers_have_it() -> bool:
            return await consumer.end_offsets([tp]) == {tp: 1} and await probe.end_offsets([tp]) == {tp: 1}

        await eventually(followers_have_it, 60, "the first record replicated")
        os.kill(follower.process.popen.pid, signal.SIGSTOP)
        try:
            await producer.send_and_wait("lagging", b"only the leader has it")
            assert await probe.end_offsets([tp]) == {tp: 2}
            # No consumer sees it yet: the stopped follower stays in sync for replica.lag.time.max.ms (30 s).
            assert await consumer.end_offsets([tp]) == {tp: 1}
        finally:
            os.kill(follower.process.popen.pid, signal.SIGCONT)
    finally:
        await producer.stop()
        await consumer.stop()
        await probe.close()
