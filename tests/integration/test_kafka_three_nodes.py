"""Three-node KRaft mode: RF=3 topics take acks=all writes, even with one broker down."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka_server import KafkaCluster
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
