"""The timer table's Faust storage (memory or RocksDB) behind `states.RawStore`.

The worker writes the changelog itself (so it can wait for Kafka's acknowledgement) and then
writes the store by partition; Faust still recovers the store from the changelog, keeps
standby replicas, and reads only the changelog's tail after a restart of a RocksDB store
(the offset written through here is what it resumes from). The partition-level calls are
Faust 0.15's storage internals, pinned by constraints.txt.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from faust.types import TP


class FaustStore:
    def __init__(self, table: Any, changelog_topic: str) -> None:
        self.store = table.data
        self.changelog_topic = changelog_topic
        self.rocksdb = hasattr(self.store, "_db_for_partition")

    def get(self, key: bytes, partition: int) -> bytes | None:
        if self.rocksdb:
            value: bytes | None = self.store._db_for_partition(partition).get(key)
            return value
        return self.store.data.get(key)  # type: ignore[no-any-return]

    def put(self, key: bytes, partition: int, value: bytes | None) -> None:
        if self.rocksdb:
            db = self.store._db_for_partition(partition)
            if value is None:
                db.delete(key)
            else:
                db.put(key, value)
            return
        if value is None:
            self.store.data.pop(key, None)
            self.store._key_partition.pop(key, None)
        else:
            self.store.data[key] = value
            self.store._key_partition[key] = partition

    def items(self, partitions: set[int], partition_of: Callable[[bytes], int]) -> Iterator[tuple[bytes, bytes]]:
        """Every stored (key, value) of `partitions`: a RocksDB store reads just their databases."""
        if self.rocksdb:
            for partition in sorted(partitions):
                for key, value in self.store._db_for_partition(partition).items():
                    if key != self.store.offset_key and value is not None:
                        yield key, value
            return
        for key, value in list(self.store.data.items()):
            if value is not None and partition_of(key) in partitions:
                yield key, value

    def persisted(self, partition: int, changelog_offset: int) -> None:
        self.store.set_persisted_offset(TP(self.changelog_topic, partition), changelog_offset)
