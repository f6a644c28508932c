"""The started broker is a real Kafka: aiokafka produces and consumes through it."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka_server import KafkaCluster


async def test_produce_consume_round_trip(kafka: KafkaCluster) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic("roundtrip", num_partitions=3, replication_factor=1)])
    finally:
        await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        for i in range(30):
            await producer.send_and_wait("roundtrip", f"value-{i}".encode(), key=f"k{i % 5}".encode())
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer("roundtrip", bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    seen: dict[str, list[str]] = {}
    try:
        async with asyncio.timeout(30):
            while sum(map(len, seen.values())) < 30:
                batch = await consumer.getmany(timeout_ms=500)
                for records in batch.values():
                    for record in records:
                        assert record.key is not None and record.value is not None
                        seen.setdefault(record.key.decode(), []).append(record.value.decode())
    finally:
        await consumer.stop()

    assert sorted(seen) == ["k0", "k1", "k2", "k3", "k4"]
    # Same key, same partition: per-key order survives the round trip.
    for key, values in seen.items():
        expected = [f"value-{i}" for i in range(30) if f"k{i % 5}" == key]
        assert values == expected
