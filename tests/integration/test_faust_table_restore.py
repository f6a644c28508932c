"""A Faust table survives a worker restart by recovery from its Kafka changelog."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from infra.kafka_server import KafkaCluster
from infra.process import ServerProcess
from tests.conftest import print_on_failure
from tests.support.waiting import eventually


def start_worker(kafka: KafkaCluster, tmp_path: Path, run: int) -> ServerProcess:
    env = {
        **os.environ,
        "COUNTER_APP_ID": "counter-test",
        "COUNTER_BROKER": kafka.bootstrap,
        # A fresh data dir each run: the memory store starts empty, so only the changelog can restore it.
        "COUNTER_DATADIR": str(tmp_path / f"data-{run}"),
    }
    proc = ServerProcess(
        f"counter-worker-{run}",
        [sys.executable, "-m", "faust", "-A", "tests.integration.counter_app", "worker", "-l", "info"],
        tmp_path / f"worker-{run}.log",
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    proc.start()
    return proc


async def ready(worker: ServerProcess) -> None:
    """Until the worker says it is ready. Faust drops a message its flow control interrupts
    while a fresh worker resumes after recovery, so input sent before that may be skipped."""
    await eventually(lambda: asyncio.sleep(0, "[^Worker]: Ready" in worker.log_path.read_text()), 60, "ready")


async def next_result(consumer: AIOKafkaConsumer, want: str, timeout: float = 60) -> None:
    async with asyncio.timeout(timeout):
        while True:
            record = await consumer.getone()
            if record.value is not None and record.value.decode() == want:
                return


async def test_table_restored_from_changelog(
    kafka: KafkaCluster, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    await admin.create_topics([NewTopic(t, 2, 1) for t in ("counter-input", "counter-output")])
    await admin.close()

    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all")
    consumer = AIOKafkaConsumer("counter-output", bootstrap_servers=kafka.bootstrap, auto_offset_reset="earliest")
    await producer.start()
    await consumer.start()
    workers: list[ServerProcess] = []
    try:
        workers.append(start_worker(kafka, tmp_path, 1))
        await ready(workers[0])
        for _ in range(5):
            await producer.send_and_wait("counter-input", b"x", key=b"a")
        for _ in range(3):
            await producer.send_and_wait("counter-input", b"x", key=b"b")
        await next_result(consumer, "a=5")
        await next_result(consumer, "b=3")

        workers[0].stop()
        assert workers[0].popen is not None and workers[0].popen.returncode is not None

        workers.append(start_worker(kafka, tmp_path, 2))
        await ready(workers[1])
        await producer.send_and_wait("counter-input", b"x", key=b"a")
        await producer.send_and_wait("counter-input", b"x", key=b"b")
        # Counting on from 5 and 3, not from 0: the table came back from the changelog.
        await next_result(consumer, "a=6")
        await next_result(consumer, "b=4")
    finally:
        print_on_failure(request, lambda: "\n".join(w.log_tail() for w in workers))
        for worker in workers:
            worker.stop()
        await producer.stop()
        await consumer.stop()
