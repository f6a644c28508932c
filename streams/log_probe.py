"""Asking Kafka where input partitions end, and where the worker's consumer group starts them."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient


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
                # read_committed, as the worker's consumer: an end is then the last stable offset,
                # so a partition with a transaction open is not caught up until it is decided.
                consumer = AIOKafkaConsumer(
                    bootstrap_servers=self.bootstrap,
                    enable_auto_commit=False,
                    request_timeout_ms=10_000,
                    isolation_level="read_committed",
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
        consumer, _ = await self._clients()
        ends: dict[TopicPartition, int] = await consumer.end_offsets(list(tps))
        return ends

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
