"""Asking Kafka where input partitions end, and where the worker's consumer group starts them.

Where a partition ends means its leader's log end offset, not the high watermark a consumer's
ListOffsets returns. A record the leader has appended (and stamped) is below the high watermark
only once its in-sync followers have it: usually a replication round trip later, but up to
`replica.lag.time.max.ms` (30 s by default) when a follower has stopped and is not yet out of the
in-sync set, and until enough replicas are back when fewer than `min.insync.replicas` are in sync.
A lookup of the high watermark would vouch for a partition that holds such a record, and the
worker would fold records stamped after it first, in an order replay would not take.
ListOffsets answers with the log end offset when its replica id is not a consumer's (-1): that is
how followers still ask. With any id but the debugging one (-2) only the leader answers; others
refuse with NOT_LEADER_OR_FOLLOWER, so stale metadata cannot return a follower's shorter log. The
broker checks the same Describe permission on the topic as for a consumer.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import LeaderNotAvailableError, for_code
from aiokafka.protocol.offset import OffsetRequest

LEADER_ONLY_REPLICA_ID = 2**31 - 1  # neither a consumer (-1) nor the debugging id (-2)
LATEST = -1  # ListOffsets' timestamp for "the end"


class KafkaLogProbe:
    """A group-less consumer for ListOffsets and an admin client for the group's committed offsets,
    both started on first use."""

    def __init__(self, bootstrap: str, group_id: str, **client_options: Any) -> None:
        self.bootstrap = bootstrap
        self.group_id = group_id
        self.options = client_options
        self._consumer: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._starting = asyncio.Lock()

    async def _clients(self) -> tuple[AIOKafkaConsumer, AIOKafkaAdminClient]:
        async with self._starting:
            if self._consumer is None:
                # Its client's connections and metadata serve the lookups; the log end includes a
                # transaction still open, so its partition is not caught up until it is decided.
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    enable_auto_commit=False,
                    request_timeout_ms=10_000,
                    **self.options,
                )
                await consumer.start()
                self._consumer = consumer
            if self._admin is None:
                admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=10_000, **self.options)
                await admin.start()
                self._admin = admin
        return self._consumer, self._admin

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """Each partition's log end offset, from its leader (see the module's docstring). Raises a
        KafkaError when a leader is unknown or moved (after asking for fresh metadata)."""
        consumer, _ = await self._clients()
        return await leader_log_ends(consumer._client, tps)

    async def start_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offset, or the log start where it has none or retention removed
        it (the client resets to the earliest record there: no batch could begin before it)."""
        consumer, admin = await self._clients()
        committed = await admin.list_consumer_group_offsets(self.group_id, partitions=list(tps))
        starts: dict[TopicPartition, int] = await consumer.beginning_offsets(list(tps))
        out = {tp: meta.offset for tp, meta in committed.items() if meta is not None and meta.offset >= 0}
        return {tp: max(out.get(tp, 0), start) for tp, start in starts.items()}

    async def close(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()
        if self._admin is not None:
            await self._admin.close()


async def leader_log_ends(client: Any, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
    """ListOffsets (latest) with a non-consumer replica id, sent to each partition's leader."""
    by_leader: dict[int, dict[str, list[tuple[int, int]]]] = defaultdict(lambda: defaultdict(list))
    leaders = {tp: client.cluster.leader_for_partition(tp) for tp in tps}
    leaderless = sorted(tp for tp, leader in leaders.items() if leader is None or leader < 0)
    if leaderless:
        if any(leaders[tp] is None for tp in leaderless):
            # Every wanted topic, not only the unknown one: metadata then holds only those asked for.
            for topic in {tp.topic for tp in tps}:
                client.add_topic(topic)
        client.force_metadata_update()
        raise LeaderNotAvailableError(f"no known leader of {leaderless}")
    for tp, leader in leaders.items():
        by_leader[leader][tp.topic].append((tp.partition, LATEST))
    responses = await asyncio.gather(
        *(
            client.send(leader, OffsetRequest(LEADER_ONLY_REPLICA_ID, 0, list(topics.items())))
            for leader, topics in by_leader.items()
        )
    )
    ends: dict[TopicPartition, int] = {}
    for response in responses:
        for topic, partitions in response.topics:
            for partition, error_code, _timestamp, offset in partitions:  # v1-v3, which aiokafka speaks
                if error_code:
                    error = for_code(error_code)
                    if error.invalid_metadata:
                        client.force_metadata_update()
                    raise error(f"end offset of {topic}-{partition}")
                ends[TopicPartition(topic, partition)] = offset
    return ends
