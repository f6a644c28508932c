"""The worker's composition root: the Faust app, its agent over the input topics, the
changelog-backed timer table, the scheduler and the Redis projection, wired together.

The agent runs with concurrency 1: each auction's inputs must be folded one after another,
in order, because each fold reads the state the previous one wrote. The four input topics
are co-partitioned with the table.
The scheduler follows the table partitions this worker actively owns.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from prometheus_client import Gauge

from app.redis_client import connect
from app.settings import Settings
from projections.consumer import ProjectionConsumer
from projections.keys import Keys
from projections.reconciler import Reconciler
from projections.store import ProjectionStore
from streams import outputs, topics
from streams.clock import wall_ms
from streams.metrics import ACTIVE_TIMERS
from streams.processor import Message, TimerProcessor, partition_for
from streams.producer import LazyProducer
from streams.scheduler import Scheduler
from streams.state import decode_state

log = logging.getLogger("auction_timer.worker")

TICK_LINGER_MS = 10
READY = Gauge("auctions_timer_worker_ready", "1 when this worker has rebuilt its schedule after the latest rebalance")


class IdempotentProducer(faust_aiokafka.Producer):
    """acks=all with idempotence on every send (Faust only sets it inside transactions)."""

    def _settings_extra(self) -> dict[str, Any]:
        return {"acks": "all", "enable_idempotence": True}


class IdempotentTransport(faust_aiokafka.Transport):
    Producer = IdempotentProducer


class TimerApp(faust.App):
    def _new_producer_transport(self) -> Any:
        return IdempotentTransport(self.conf.broker_producer, self)


def build_worker_app(settings: Settings, replication: int) -> tuple[TimerApp, Scheduler]:
    partitions = settings.topic_partitions
    app = TimerApp(
        settings.app_id,
        broker=[f"kafka://{host}" for host in settings.kafka_bootstrap.split(",")],
        store="memory://",
        datadir=str(settings.data_dir / "faust"),
        topic_partitions=partitions,
        topic_replication_factor=replication,
        topic_allow_declare=True,
        table_standby_replicas=0,
        consumer_auto_offset_reset="earliest",
        consumer_group_instance_id=settings.worker_id,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        broker_commit_interval=1.0,
        producer_acks=-1,
        producer_linger_ms=0,
        web_enabled=False,
    )
    # Keys and values stay raw bytes: the changelog holds the auction_id and the state's JSON,
    # readable by replay and by operators without Faust. (A bytes key_type is what makes a
    # Faust table use the raw codec; a Schema shared with a table gets rewritten to json.)
    table = app.Table("timers", default=None, key_type=bytes, value_type=bytes, partitions=partitions)
    raw: faust.Schema[bytes, bytes] = faust.Schema(
        key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
    )
    channel = app.topic(*topics.INPUT_TOPICS, schema=raw, partitions=partitions)
    processor = TimerProcessor(table, partitions, settings.max_event_bytes)

    async def send(record: outputs.Record) -> object:
        return await app.producer.send(record.topic, record.key, record.value, None, None, None)

    # Ticks get a producer of their own that batches for a few milliseconds, so thousands of
    # ticks a second neither crowd nor slow the deadline commands and timer events on Faust's
    # producer (which sends at once).
    ticks = LazyProducer(settings.kafka_bootstrap, linger_ms=TICK_LINGER_MS)
    scheduler = Scheduler(settings.tick_interval_s, send, ticks.send)
    store = ProjectionStore(connect(settings), Keys(settings.key_prefix), settings.ended_ttl_s)
    reconciler = Reconciler(store, settings.reconcile_interval_s, send, wall_ms)

    @app.agent(channel, concurrency=1)
    async def process_inputs(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            raw = event.message
            msg = Message(raw.topic, raw.partition, raw.offset, raw.key, raw.value)
            outcome = await processor.apply_message(msg)
            for record in outcome.records:
                await send(record)
            for change in outcome.changes:
                await scheduler.on_change(change.state)
                reconciler.on_change(change.state)
            for auction_id in outcome.reconcile:
                reconciler.request(auction_id)

    def owned_partitions() -> set[int]:
        return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in topics.INPUT_TOPICS}

    frozen: list[bool] = []

    @table.on_recover
    async def rebuild_schedule() -> None:
        owned = owned_partitions()
        states = [decode_state(v) for k, v in table.items() if v and partition_for(k, partitions) in owned]
        scheduler.rebuild(owned, states)
        reconciler.rebuild(states)
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
        scheduler.revoke(a for a in list(scheduler.schedule.live) if partition_for(a.encode(), partitions) in lost)
        reconciler.revoke(a for a in list(reconciler.tracked) if partition_for(a.encode(), partitions) in lost)
        log.info("partitions revoked", extra={"partitions": sorted(lost), "live_timers": len(scheduler.schedule)})

    @app.task  # type: ignore[untyped-decorator]
    async def run_scheduler() -> None:
        ACTIVE_TIMERS.set(0)
        try:
            await scheduler.run()
        finally:
            await ticks.close()

    @app.task  # type: ignore[untyped-decorator]
    async def run_reconciler() -> None:
        await reconciler.run()

    @app.task  # type: ignore[untyped-decorator]
    async def run_projection() -> None:
        # Its own consumer group: a Redis outage makes it lag, never the fold.
        consumer = ProjectionConsumer(settings.kafka_bootstrap, f"{settings.app_id}-projection", store, wall_ms)
        await consumer.run()

    return app, scheduler
