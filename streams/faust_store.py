"""The timer table's Faust storage (memory or RocksDB) behind `states.RawStore`.

The worker writes the changelog itself (so it can wait for Kafka's acknowledgement) and then
writes the store by partition; Faust still recovers the store from the changelog, keeps
standby replicas, and reads only the changelog's tail after a restart of a RocksDB store
(the offset written through here is what it resumes from). The partition-level calls are
Faust 0.15's storage internals, pinned by constraints.txt.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import faust
from faust.types import TP

from streams.state import EXPIRED_PREFIX

_VERSION = re.compile(rb'"version":([0-9]+)')


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


class VersionedTable(faust.Table[bytes, bytes]):
    """The timer table: a changelog record is applied (in recovery and on standbys) only when
    its version is not older than what the store holds. A worker that lost its partitions
    while a write was in flight may land an older state after its successor's newer one; a
    version never goes back, so the older one is passed over. (Compaction could still keep
    only the older record; that is the case transactions would fence, see the README.)"""

    def apply_changelog_batch(self, batch: Iterable[Any]) -> None:
        kept = []
        newest: dict[bytes, int] = {}
        for event in batch:
            message = event.message
            key, value = message.key, message.value
            version = _VERSION.search(value) if value is not None and not key.startswith(EXPIRED_PREFIX) else None
            if version is None:
                kept.append(event)
                continue
            stored = newest.get(key)
            if stored is None:
                raw = FaustStore(self, "").get(key, message.partition)
                found = _VERSION.search(raw) if raw is not None else None
                stored = int(found.group(1)) if found is not None else 0
            if int(version.group(1)) >= stored:
                newest[key] = int(version.group(1))
                kept.append(event)
        super().apply_changelog_batch(kept)
