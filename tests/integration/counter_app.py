"""A minimal Faust app with a changelog-backed table, run as a worker process by
test_faust_table_restore. Its settings come from the environment the test sets."""

from __future__ import annotations

import os

import faust

app = faust.App(
    os.environ.get("COUNTER_APP_ID", "counter"),
    broker=f"kafka://{os.environ.get('COUNTER_BROKER', 'localhost:9092')}",
    store="memory://",
    topic_partitions=2,
    topic_replication_factor=1,
    datadir=os.environ.get("COUNTER_DATADIR", "/tmp/counter-app"),
    web_enabled=False,
)
source = app.topic("counter-input", key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
results = app.topic("counter-output", key_type=bytes, value_type=bytes, value_serializer="raw", key_serializer="raw")
counts = app.Table("counts", default=int, partitions=2)


@app.agent(source, concurrency=1)
async def count(stream: faust.StreamT[bytes]) -> None:
    async for event in stream.events():
        key = event.key.decode()
        counts[key] += 1
        await results.send(key=event.key, value=f"{key}={counts[key]}".encode())
