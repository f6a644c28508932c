"""Peer of the ingest benchmark: an empty Faust agent over the four input topics, the floor of
Faust's per-event path (a Message per record, the conductor, the stream, sensors, acks).

`python bench/peers/ingest_faust_empty.py BOOTSTRAP GROUP DATA_DIR` consumes the input topics
in group GROUP from the start until SIGTERM, doing nothing with the events; the bench counts it
by its committed offsets. It runs the way our worker runs (`app/cli.py`): the same commit
interval, no web server, the same collector thresholds, the standard asyncio loop."""

from __future__ import annotations

import gc
import sys

import faust

from streams import topics


def main(bootstrap: str, group: str, data_dir: str) -> None:
    app = faust.App(
        group,
        broker=[f"kafka://{host}" for host in bootstrap.split(",")],
        store="memory://",
        datadir=data_dir,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=0.5,
        topic_allow_declare=False,
        web_enabled=False,
    )
    raw: faust.Schema[bytes, bytes] = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    channel = app.topic(*topics.INPUT_TOPICS, schema=raw)

    @app.agent(channel)
    async def nothing(stream: faust.StreamT[bytes]) -> None:
        async for _ in stream.events():
            pass

    gc.set_threshold(50_000, 20, 100)
    worker = faust.Worker(app, loglevel="WARNING", redirect_stdouts=False, quiet=True)
    worker.spinner = None  # as our worker (app/worker.py faust_worker): no root logger at DEBUG
    worker.execute_from_commandline()


if __name__ == "__main__":
    main(*sys.argv[1:4])
