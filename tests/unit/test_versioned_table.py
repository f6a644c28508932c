"""The timer table's changelog recovery (and standby replicas) never take a state older than
the one they hold: a worker that lost its partitions while a write was in flight may land its
older state after its successor's newer one."""

from __future__ import annotations

from dataclasses import dataclass, replace

import faust

from streams.faust_store import FaustStore, VersionedTable
from streams.state import Expired, decode_state, encode_state, expired_key
from tests.support.gateway import timer


@dataclass
class Msg:
    key: bytes
    value: bytes | None
    partition: int = 0


@dataclass
class Event:
    message: Msg

    @property
    def key(self) -> bytes:
        return self.message.key

    @property
    def value(self) -> bytes | None:
        return self.message.value


def table() -> tuple[VersionedTable, FaustStore]:
    app = faust.App("versioned-table-test", store="memory://", Table=VersionedTable)
    made = app.Table("timers", default=None, key_type=bytes, value_type=bytes, partitions=1)
    assert isinstance(made, VersionedTable)
    return made, FaustStore(made, "changelog")


def version(store: FaustStore, key: bytes) -> int | None:
    raw = store.get(key, 0)
    return None if raw is None else decode_state(raw).version


def versioned(v: int) -> bytes:
    return encode_state(replace(timer("a1"), version=v))


def test_an_older_version_after_a_newer_one_is_passed_over_within_and_across_batches() -> None:
    made, store = table()
    made.apply_changelog_batch(
        [Event(Msg(b"a1", versioned(1))), Event(Msg(b"a1", versioned(3))), Event(Msg(b"a1", versioned(2)))]
    )
    assert version(store, b"a1") == 3
    made.apply_changelog_batch([Event(Msg(b"a1", versioned(2)))])  # the zombie's write, later
    assert version(store, b"a1") == 3
    made.apply_changelog_batch([Event(Msg(b"a1", versioned(3))), Event(Msg(b"a1", versioned(4)))])
    assert version(store, b"a1") == 4  # the same version again and newer ones are taken


def test_tombstones_and_markers_are_applied_as_they_come() -> None:
    made, store = table()
    marker = encode_state(Expired("expired", "a1", 4, 1, 2))
    made.apply_changelog_batch(
        [Event(Msg(b"a1", versioned(4))), Event(Msg(b"a1", None)), Event(Msg(expired_key(b"a1"), marker))]
    )
    assert store.get(b"a1", 0) is None
    assert store.get(expired_key(b"a1"), 0) == marker
