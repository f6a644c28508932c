"""Creating the contract's topics with the configured partitions and replication factor."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from app.settings import Settings
from streams import topics
from streams.errors import SettingsError

log = logging.getLogger("auction_timer.topics")


def replication_for(settings: Settings, brokers: int) -> int:
    """The configured factor, or with `auto` three copies where the cluster has three brokers."""
    factor = settings.replication_factor or min(3, brokers)
    if factor > brokers:
        raise SettingsError(
            f"AUCTION_TIMER_REPLICATION_FACTOR={factor} but the cluster has {brokers} broker(s); lower it or use auto"
        )
    return factor


def topic_config(name: str, replication: int) -> dict[str, str]:
    config = dict(topics.TOPIC_CONFIGS.get(name, {}))
    if replication >= 3:
        config["min.insync.replicas"] = "2"
    return config


async def described_when_ready(
    admin: AIOKafkaAdminClient, names: list[str], timeout: float = 30
) -> list[dict[str, Any]]:
    """Just-created topics describe with no partitions until their metadata spreads (on three
    brokers this takes a moment); wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        described: list[dict[str, Any]] = await admin.describe_topics(names)
        if all(t["partitions"] for t in described) or time.monotonic() > deadline:
            return described
        await asyncio.sleep(0.2)


async def partition_counts(bootstrap: str, names: list[str]) -> dict[str, int]:
    """How many partitions each existing topic of `names` has (missing topics are left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0 and t["partitions"]}


async def ensure_topics(settings: Settings) -> int:
    """Create any missing topic; check the input topics' partition counts (co-partitioning
    with the table depends on it). Returns the replication factor in use."""
    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap, request_timeout_ms=15000)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise SettingsError(
            f"cannot reach Kafka at AUCTION_TIMER_KAFKA_BOOTSTRAP={settings.kafka_bootstrap}: {exc}"
        ) from exc
    try:
        cluster = await admin.describe_cluster()
        replication = replication_for(settings, len(cluster["brokers"]))
        existing = set(await admin.list_topics())
        missing = [
            NewTopic(name, settings.topic_partitions, replication, topic_configs=topic_config(name, replication))
            for name in topics.ALL_TOPICS
            if name not in existing
        ]
        for new in missing:
            try:
                await admin.create_topics([new])
                log.info("created topic", extra={"topic": new.name, "partitions": settings.topic_partitions})
            except TopicAlreadyExistsError:
                pass  # another worker won the race
        for topic in await described_when_ready(admin, list(topics.INPUT_TOPICS)):
            count = len(topic["partitions"])
            if count != settings.topic_partitions:
                raise SettingsError(
                    f"topic {topic['topic']} has {count} partitions but AUCTION_TIMER_TOPIC_PARTITIONS="
                    f"{settings.topic_partitions}; every input topic and the table must have the same count"
                )
        return replication
    finally:
        await admin.close()
