"""The worker's composition root: the Faust app, its agent over the input topics, the
changelog-backed timer table, the engine, the scheduler and the Redis projection, wired.

The agent runs with concurrency 1 and hands every fetched batch to the engine
(streams/engine.py), which folds the four co-partitioned input topics in the order the
log defines and acknowledges a batch only once everything it caused is in Kafka.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from functools import partial
from typing import Any

import faust
from faust.types import TP
from prometheus_client import Gauge

from app import memory
from app.logs import logging_dict
from app.redis_client import connect
from app.settings import Settings
from projections.consumer import ProjectionConsumer
from projections.keys import Keys
from projections.reconciler import Reconciler
from projections.store import ProjectionStore
from streams import topics
from streams.clock import wall_ms
from streams.delivery import Delivery, Outgoing
from streams.effects import TimerChanged
from streams.engine import Engine
from streams.faust_batches import BatchConsumer, BatchMessage, acknowledge, batch_transport
from streams.faust_store import FaustStore, VersionedTable
from streams.log_probe import KafkaLogProbe
from streams.metrics import ACTIVE_TIMERS, WATERMARK_LAG
from streams.outputs import Record
from streams.processor import TimerProcessor
from streams.retention import Sweeper
from streams.scheduler import Scheduler
from streams.state import TimerState, decode_state, stored_live
from streams.states import StateCache

log = logging.getLogger("auction_timer.worker")

TICK_LINGER_MS = 10
STREAM_BUFFER_BATCHES = 32  # fetched batches queued for the agent, at most (see build_worker_app)
# Per table partition (a RocksDB each): small write buffers and a bounded block cache keep a
# worker holding a million states within its memory budget; the OS page cache does the rest.
ROCKSDB_OPTIONS = {
    "write_buffer_size": 8 * 1024 * 1024,
    "max_write_buffer_number": 2,
    "block_cache_size": 16 * 1024 * 1024,
    "block_cache_compressed_size": 0,
    "max_open_files": 256,
}
READY = Gauge("auctions_timer_worker_ready", "1 when this worker has rebuilt its schedule after the latest rebalance")


class TimerApp(faust.App):
    transport_class = batch_transport(frozenset(topics.INPUT_TOPICS))

    def _new_transport(self) -> Any:
        return self.transport_class(self.conf.broker_consumer, self)


def faust_credentials(options: dict[str, Any]) -> faust.SASLCredentials | None:
    """Faust's form of the Kafka client options (Settings.kafka_client_options): its consumer,
    producer and topic creation connect with these."""
    if options["security_protocol"] == "PLAINTEXT":
        return None
    return faust.SASLCredentials(
        username=options["sasl_plain_username"],
        password=options["sasl_plain_password"],
        ssl_context=options["ssl_context"],
        mechanism=options["sasl_mechanism"],
    )


def faust_worker(app: faust.App, log_level: str) -> faust.Worker:
    worker = faust.Worker(
        app, loglevel=log_level, logging_config=logging_dict(log_level), redirect_stdouts=False, quiet=True
    )
    # At WARNING and above Faust spins a terminal progress spinner on every log record, and to
    # see them all it sets the root logger to DEBUG: every debug line of every library (one per
    # changelog record in recovery) would be formatted. Nobody watches a service's terminal.
    worker.spinner = None
    return worker


def build_worker_app(settings: Settings, replication: int) -> tuple[TimerApp, Scheduler]:
    partitions = settings.topic_partitions
    kafka_options = settings.kafka_client_options()
    app = TimerApp(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        broker_credentials=faust_credentials(kafka_options),
        store=f"{settings.table_store}://",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=partitions,
        topic_replication_factor=replication,
        topic_allow_declare=True,
        table_standby_replicas=settings.standby_replicas,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.worker_id,
        broker_session_timeout=10.0,
        # A member learns of a rebalance from its next heartbeat's answer: when a worker leaves,
        # up to this long passes before the others begin to rejoin and take its partitions over.
        broker_heartbeat_interval=1.0,
        broker_commit_interval=0.5,
        # The engine holds records it has not folded yet; a rebalance must not wait for them
        # (they were never acknowledged, so the partition's next owner folds them).
        stream_wait_empty=False,
        # Each queued message is a fetched batch (up to 1 MiB of one partition's records), and
        # Faust's default of 4,096 let a worker folding a backlog slower than it fetched hold
        # gigabytes of them; 32 keep the fold busy and bound the records in memory.
        stream_buffer_maxsize=STREAM_BUFFER_BATCHES,
        web_enabled=False,
        Table=VersionedTable,
    )
    # Keys and values stay raw bytes: the changelog holds the auction_id and the state's JSON,
    # readable by replay and by operators without Faust. (A bytes key_type is what makes a
    # Faust table use the raw codec; a Schema shared with a table gets rewritten to json.)
    table = app.Table(
        "timers", default=None, key_type=bytes, value_type=bytes, partitions=partitions, options=ROCKSDB_OPTIONS
    )
    raw: faust.Schema[bytes, bytes] = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    channel = app.topic(*topics.INPUT_TOPICS, schema=raw, partitions=partitions)
    changelog = topics.changelog_topic(settings.app_id)

    stored = FaustStore(table, changelog)
    processor = TimerProcessor(
        states=StateCache(stored, lambda key: processor.home(key)),
        partitions=partitions,
        max_event_bytes=settings.max_event_bytes,
        rules=settings.fold_rules(),
    )
    states = processor.states
    assert isinstance(states, StateCache)

    delivery = Delivery(settings.kafka_bootstrap, **kafka_options)
    # Ticks get a producer of their own that batches for a few milliseconds, so thousands of
    # ticks a second neither crowd nor slow the deadline commands and timer events.
    ticks = Delivery(settings.kafka_bootstrap, linger_ms=TICK_LINGER_MS, **kafka_options)

    async def send_command(record: Record) -> asyncio.Future[Any]:
        return await delivery.send(record)

    def owned_state(auction_id: str) -> TimerState | None:
        """An auction's state for the scheduler and the reconciler: only of a partition the
        engine holds (a revoked one's store may be closed, its unwritten states dropped), and
        read without caching, so that their passes do not push the fold's working set out."""
        key = auction_id.encode()
        return states.peek(key) if processor.home(key) in engine.groups else None

    scheduler = Scheduler(
        settings.tick_interval_s, send_command, ticks.send, owned_state, wall_ms,
        tick_horizon_s=settings.kafka_tick_horizon_s, lateness_ms=settings.allowed_lateness_ms,
    )  # fmt: skip
    # Read when scraped: a worker's tasks start after its first recovery, which already filled the schedule.
    ACTIVE_TIMERS.set_function(lambda: len(scheduler.schedule))
    store = ProjectionStore(connect(settings), Keys(settings.key_prefix), settings.ended_ttl_s)

    async def publish(record: Record) -> object:
        return await delivery.deliver([Outgoing.of(record)])

    reconciler = Reconciler(
        store, settings.reconcile_interval_s, settings.reconcile_sweep_s, publish, wall_ms, owned_state
    )

    def on_changes(changes: list[TimerChanged]) -> None:
        for change in changes:
            scheduler.on_change(change.state)
            reconciler.on_change(change.state)

    crashing: list[asyncio.Task[None]] = []  # referenced, so the task is not collected before it runs

    def on_fatal(exc: BaseException) -> None:
        # The fold or a partition's way out broke: nothing more of it can be acknowledged, so
        # the worker stops and the partitions' next owner folds the unacknowledged inputs again.
        if not crashing:
            crashing.append(asyncio.get_running_loop().create_task(app.crash(exc)))

    def consumer_tps(tps: list[Any]) -> set[TP]:
        return {TP(tp.topic, tp.partition) for tp in tps}

    probe = KafkaLogProbe(settings.kafka_bootstrap, settings.app_id, **kafka_options)
    engine = Engine(
        processor, states, delivery, probe, changelog,
        on_changes, reconciler.request, on_fatal,
        pause=lambda tps: app.consumer.pause_partitions(consumer_tps(tps)),
        resume=lambda tps: app.consumer.resume_partitions(consumer_tps(tps)),
        seek=lambda tp, offset: app.consumer.seek_wait({TP(tp.topic, tp.partition): offset}),
    )  # fmt: skip

    @app.agent(channel, concurrency=1)
    async def process_inputs(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.noack().events():  # type: ignore[attr-defined]
            message = event.message
            assert isinstance(message, BatchMessage)
            ack = partial(acknowledge, event)
            engine.receive(message.topic, message.partition, message.records, ack, message.start, message.end)

    def owned_partitions() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in topics.INPUT_TOPICS}

    def owned_items() -> Iterator[tuple[bytes, bytes]]:
        return stored.items(owned_partitions(), states.partition_of)

    frozen: list[bool] = []

    @table.on_recover
    async def rebuild_schedule() -> None:
        owned = owned_partitions()
        # Live timers only, picked by their first bytes: a million ended ones cost a scan, not a
        # decode. Decoded one at a time: the schedule and the reconciler keep a little of each.
        scheduler.rebuild(owned, (decode_state(v) for _, v in owned_items() if stored_live(v)))
        reconciler.rebuild(scheduler.schedule.live.keys())
        if not frozen:
            # The first restored table is long-lived: keep it out of the collector's way, so full
            # collections (which otherwise walk every timer) do not stall deadlines. Once only:
            # every freeze pins whatever is alive at that moment for the rest of the process.
            gc.freeze()
            frozen.append(True)
        READY.set(1)

    # mode types receivers as (sender, *args, signal, **kwargs); Faust sends the revoked set.
    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(sender: Any, revoked: set[TP], **_: Any) -> None:
        READY.set(0)
        lost = {tp.partition for tp in revoked if tp.topic in topics.INPUT_TOPICS}
        # Forgotten before the engine drops their groups and unwritten states: from then on the
        # scheduler and the reconciler find no state of them (owned_state), and follow none.
        scheduler.revoke(a for a in list(scheduler.schedule.live) if processor.home(a.encode()) in lost)
        reconciler.revoke(a for a in list(reconciler.tracked) if processor.home(a.encode()) in lost)
        await engine.revoke(lost)
        log.info("partitions revoked", extra={"partitions": sorted(lost), "live_timers": len(scheduler.schedule)})

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def on_assigned(sender: Any, assigned: set[TP], **_: Any) -> None:
        engine.assign(tp.partition for tp in assigned if tp.topic in topics.INPUT_TOPICS)

    @app.task  # type: ignore[untyped-decorator]
    async def run_scheduler() -> None:
        try:
            await scheduler.run()
        finally:
            await ticks.close()
            await delivery.close()

    sweeper = Sweeper(
        lambda: stored.items(owned_partitions(), states.partition_of),
        send_command,
        settings.ended_retention_ms,
        wall_ms,
    )

    @app.task  # type: ignore[untyped-decorator]
    async def run_retention() -> None:
        await sweeper.run()

    @app.task  # type: ignore[untyped-decorator]
    async def run_reconciler() -> None:
        await reconciler.run()

    @app.task  # type: ignore[untyped-decorator]
    async def run_projection() -> None:
        # Its own consumer group: a Redis outage makes it lag, never the fold.
        consumer = ProjectionConsumer(
            settings.kafka_bootstrap, f"{settings.app_id}-projection", store, wall_ms, **kafka_options
        )
        await consumer.run()

    trimmer = memory.Trimmer()

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def release_memory() -> None:
        # Freed heap memory back to the system once resident memory has grown (app/memory.py).
        if trimmer.due():
            await asyncio.to_thread(trimmer.run_once)

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def check_positions() -> None:
        consumer = app.consumer
        assert isinstance(consumer, BatchConsumer)
        engine.check_positions(consumer.input_positions())

    @app.timer(1.0)  # type: ignore[untyped-decorator]
    async def report_watermarks() -> None:
        engine.watch_watermarks()
        now = wall_ms()
        for partition in list(engine.groups):
            mark = engine.watermark(partition)
            if mark:
                WATERMARK_LAG.labels(str(partition)).set(max(0, now - mark))

    return app, scheduler
