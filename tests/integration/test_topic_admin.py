"""Topic creation at start-up: every topic, the table's changelog included, known to every
broker before the worker joins its group; a changelog of the wrong size stops the start."""

from __future__ import annotations

import uuid

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from app.settings import Settings
from infra.kafka_server import KafkaCluster
from streams import topics
from streams.errors import SettingsError
from streams.topic_admin import described_by_every_broker, ensure_topics


async def test_every_broker_knows_every_topic_and_the_changelog_when_ensure_topics_returns(
    kafka3: KafkaCluster,
) -> None:
    settings = Settings.from_env({"AUCTION_TIMER_KAFKA_BOOTSTRAP": kafka3.bootstrap})
    assert await ensure_topics(settings.topic_plan()) == 3
    changelog = topics.changelog_topic(settings.app_id)
    # No waiting allowed: each broker, asked on its own, already has a leader for every partition.
    described = await described_by_every_broker(kafka3.bootstrap, [*topics.ALL_TOPICS, changelog], timeout=0)
    assert {t["topic"]: len(t["partitions"]) for t in described} == dict.fromkeys([*topics.ALL_TOPICS, changelog], 8)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka3.bootstrap)
    await admin.start()
    try:
        [response] = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, changelog)])
    finally:
        await admin.close()
    entries = {entry[0]: entry[1] for entry in response.resources[0][4]}
    assert (entries["cleanup.policy"], entries["min.insync.replicas"]) == ("compact", "2")


async def test_a_changelog_with_another_partition_count_stops_the_start(kafka: KafkaCluster) -> None:
    app_id = f"size-{uuid.uuid4().hex[:8]}"
    settings = Settings.from_env({"AUCTION_TIMER_KAFKA_BOOTSTRAP": kafka.bootstrap, "AUCTION_TIMER_APP_ID": app_id})
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topics.changelog_topic(app_id), 4, 1)])
    finally:
        await admin.close()
    with pytest.raises(SettingsError, match=f"{app_id}-timers-changelog has 4 partitions"):
        await ensure_topics(settings.topic_plan())
