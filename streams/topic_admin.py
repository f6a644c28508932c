"""Creating the contract's topics with the configured partitions and replication factor."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.protocol.metadata import MetadataRequest

from streams import topics
from streams.errors import InfraError, SettingsError

log = logging.getLogger("auction_timer.topics")


def replication_for(configured: int, brokers: int) -> int:
    """The configured factor, or with `auto` (0) three copies where the cluster has three brokers."""
    factor = configured or min(3, brokers)
    if factor > brokers:
        raise SettingsError(
            f"AUCTION_TIMER_REPLICATION_FACTOR={factor} but the cluster has {brokers} broker(s); lower it or use auto"
        )
    return factor


def topic_config(base: dict[str, str], replication: int) -> dict[str, str]:
    config = dict(base)
    if replication >= 3:
        config["min.insync.replicas"] = "2"
    return config


async def described_by_every_broker(
    bootstrap: str, names: list[str], timeout: float = 30, **client_options: Any
) -> list[dict[str, Any]]:
    """Wait until every broker describes every topic of `names` with a leader on each partition;
    returns the descriptions. A created topic reaches each broker's metadata in its own time (a
    moment on three brokers), and a Faust consumer that first asks a broker still without the
    table's changelog sees it with no partitions until its next metadata refresh (minutes): every
    write to the table fails meanwhile. Starting the worker only after this wait closes that window."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **client_options)
    await client.bootstrap()
    try:
        deadline = time.monotonic() + timeout
        while True:
            lagging: dict[int, list[str]] = {}
            described: list[dict[str, Any]] = []
            for broker in client.cluster.brokers():
                request = MetadataRequest(names, allow_auto_topic_creation=False)
                try:
                    described = (await client.send(broker.nodeId, request)).to_object()["topics"]
                except KafkaError as exc:  # a broker restarting: ask again
                    lagging[broker.nodeId] = [repr(exc)]
                    continue
                if unknown := [t["topic"] for t in described if not complete(t)]:
                    lagging[broker.nodeId] = unknown
            if not lagging:
                return described
            if time.monotonic() > deadline:
                raise InfraError(
                    f"after {timeout:.0f}s these brokers still lack topics or partition leaders: {lagging}; "
                    "check that every broker reaches the KRaft controllers, then start again"
                )
            await asyncio.sleep(0.2)
    finally:
        await client.close()


def complete(topic: dict[str, Any]) -> bool:
    partitions = topic["partitions"]
    return topic["error_code"] == 0 and bool(partitions) and all(p["leader"] >= 0 for p in partitions)


async def partition_counts(bootstrap: str, names: list[str], **client_options: Any) -> dict[str, int]:
    """How many partitions each existing topic of `names` has (missing topics are left out)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000, **client_options)
    await admin.start()
    try:
        described: list[dict[str, Any]] = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0 and t["partitions"]}


@dataclass(frozen=True, slots=True)
class TopicPlan:
    """What the worker needs of the cluster: where it is, the partition count of every topic,
    the replication factor (0 = auto), the app id that names the table's changelog, and the
    aiokafka options its clients connect with (security; kept out of the repr: they hold a password)."""

    bootstrap: str
    partitions: int
    replication: int
    app_id: str
    input_retention_ms: int = -1  # -1: keep forever
    client_options: dict[str, Any] = field(default_factory=dict, repr=False)


async def input_topic_problems(admin: AIOKafkaAdminClient, plan: TopicPlan) -> list[str]:
    """What is wrong with the existing input topics' configs (empty when nothing is): every input
    topic must be stamped by the broker (LogAppendTime: the worker folds by the broker's clock)
    and keep records at least as long as the worker was told to keep them (replay needs them)."""
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in topics.INPUT_TOPICS]
    problems = []
    for response in await admin.describe_configs(resources):
        for resource in response.resources:
            name, entries = resource[3], {entry[0]: entry[1] for entry in resource[4]}
            stamp = entries.get("message.timestamp.type")
            if stamp != "LogAppendTime":
                problems.append(
                    f"topic {name} has message.timestamp.type={stamp}; the worker folds inputs by the broker's append"
                    f" time, so set it to LogAppendTime (kafka-configs --alter --entity-type topics --entity-name"
                    f" {name} --add-config message.timestamp.type=LogAppendTime)"
                )
            retention = int(entries.get("retention.ms") or -1)
            wanted = plan.input_retention_ms
            if retention != -1 and (wanted == -1 or retention < wanted):
                problems.append(
                    f"topic {name} keeps records {retention} ms but AUCTION_TIMER_INPUT_RETENTION_MS={wanted}"
                    " (-1: forever); replay and verification need them: raise the topic's retention.ms"
                )
    return problems


async def ensure_topics(plan: TopicPlan) -> int:
    """Create any missing topic (the table's changelog included), wait until every broker knows
    them all, and check that the input topics and the changelog have the configured partition
    count (co-partitioning with the table depends on it). Returns the replication factor in use."""
    admin = AIOKafkaAdminClient(bootstrap_servers=plan.bootstrap, request_timeout_ms=15000, **plan.client_options)
    try:
        await admin.start()
    except KafkaConnectionError as exc:
        raise SettingsError(f"cannot reach Kafka at AUCTION_TIMER_KAFKA_BOOTSTRAP={plan.bootstrap}: {exc}") from exc
    try:
        cluster = await admin.describe_cluster()
        replication = replication_for(plan.replication, len(cluster["brokers"]))
        existing = set(await admin.list_topics())
        # The table's changelog too, rather than leaving it to Faust: it then exists, compacted,
        # replicated like the rest and known to every broker before the worker's first rebalance.
        changelog = topics.changelog_topic(plan.app_id)
        inputs = {"message.timestamp.type": "LogAppendTime", "retention.ms": str(plan.input_retention_ms)}
        configs = {
            **dict.fromkeys(topics.INPUT_TOPICS, inputs),
            **topics.TOPIC_CONFIGS,
            changelog: topics.CHANGELOG_CONFIG,
        }
        names = [*topics.ALL_TOPICS, changelog]
        missing = [
            NewTopic(
                name,
                plan.partitions,
                replication,
                topic_configs=topic_config(configs.get(name, {}), replication),
            )
            for name in names
            if name not in existing
        ]
        for new in missing:
            try:
                await admin.create_topics([new])
                log.info("created topic", extra={"topic": new.name, "partitions": plan.partitions})
            except TopicAlreadyExistsError:
                pass  # another worker won the race
        co_partitioned = [*topics.INPUT_TOPICS, changelog]
        for topic in await described_by_every_broker(plan.bootstrap, names, **plan.client_options):
            if topic["topic"] not in co_partitioned:
                continue
            count = len(topic["partitions"])
            if count != plan.partitions:
                raise SettingsError(
                    f"topic {topic['topic']} has {count} partitions but AUCTION_TIMER_TOPIC_PARTITIONS="
                    f"{plan.partitions}; every input topic and the table's changelog must have the same count"
                )
        if problems := await input_topic_problems(admin, plan):
            raise SettingsError("; ".join(problems))
        return replication
    finally:
        await admin.close()
