"""Timer states for the fold: decoded once, cached, and held back from the store until the
changelog has them.

The store (Faust's table storage) only ever holds what the changelog holds, as in Faust's
own model. A version the fold made waits here ("dirty") until the records it caused and its
changelog record are acknowledged by Kafka; only then is it written through. So a partition
revoked mid-flight leaves nothing behind that the changelog does not know, and a state read
back after a restart is never newer than what consumers were sent. Besides timers the table
holds the markers of auctions removed after their retention (`Expired`, under their own keys)
and, for a removal, a tombstone (None).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from streams.state import Expired, TimerState, auction_key, decode_expired, decode_state, encode_state, expired_key

Stored = TimerState | Expired | None  # None: removed (a tombstone in the changelog)
_MISSING = object()


class RawStore(Protocol):
    """The table's storage by partition: bytes in, bytes out."""

    def get(self, key: bytes, partition: int) -> bytes | None: ...

    def put(self, key: bytes, partition: int, value: bytes | None) -> None: ...

    def persisted(self, partition: int, changelog_offset: int) -> None: ...


def encode_stored(value: Stored) -> bytes | None:
    return None if value is None else encode_state(value)


# Decoded states kept for the fold (about 1.3 KB each): the auctions being bid on now, which in
# a marketplace are a small share of the live ones; the rest are read from the store when due.
CAPACITY = 50_000


class StateCache:
    def __init__(self, raw: RawStore, partition_of: Callable[[bytes], int], capacity: int = CAPACITY) -> None:
        self.raw = raw
        self._partition_of = partition_of
        self.capacity = capacity
        self._unwritten: dict[bytes, Stored] = {}  # made since the last take_unwritten()
        self._dirty: dict[bytes, Stored] = {}  # newest value per key not yet in the store
        self._clean: OrderedDict[bytes, TimerState] = OrderedDict()  # decoded live states, LRU

    def partition_of(self, key: bytes) -> int:
        return self._partition_of(auction_key(key))

    def get(self, key: bytes) -> TimerState | None:
        return self._read(key, remember=True)

    def peek(self, key: bytes) -> TimerState | None:
        """As `get`, but a state read from the store is not cached: a pass over every auction
        (the reconciler's, the scheduler's in a backlog) must not push the fold's working set out."""
        return self._read(key, remember=False)

    def _read(self, key: bytes, remember: bool) -> TimerState | None:
        dirty = self._dirty.get(key, _MISSING)
        if dirty is not _MISSING:
            return dirty if isinstance(dirty, TimerState) else None
        state = self._clean.get(key)
        if state is not None:
            if remember:
                self._clean.move_to_end(key)
            return state
        raw = self.raw.get(key, self.partition_of(key))
        if raw is None:
            return None
        state = decode_state(raw)
        if remember:
            self._remember(key, state)
        return state

    def expired(self, key: bytes) -> Expired | None:
        """The marker of auction `key` removed after its retention, if any."""
        marker_key = expired_key(key)
        dirty = self._dirty.get(marker_key, _MISSING)
        if dirty is not _MISSING:
            return dirty if isinstance(dirty, Expired) else None
        raw = self.raw.get(marker_key, self.partition_of(marker_key))
        return None if raw is None else decode_expired(raw)

    def put(self, key: bytes, state: TimerState) -> None:
        self._set(key, state)

    def forget(self, key: bytes, marker: Expired) -> None:
        """Remove auction `key` (a tombstone) and keep its marker."""
        self._set(key, None)
        self._set(expired_key(key), marker)

    def drop_expired(self, key: bytes) -> None:
        self._set(expired_key(key), None)

    def _set(self, key: bytes, value: Stored) -> None:
        self._dirty[key] = value
        self._unwritten[key] = value
        self._clean.pop(key, None)

    def take_unwritten(self) -> dict[bytes, Stored]:
        """The newest value of each key changed since the last call: one changelog record each."""
        taken, self._unwritten = self._unwritten, {}
        return taken

    def written(self, key: bytes, value: Stored, encoded: bytes | None) -> None:
        """The changelog has `value` (as `encoded`): write it through to the store."""
        self.raw.put(key, self.partition_of(key), encoded)
        if key in self._dirty and self._dirty[key] is value:
            del self._dirty[key]
            if isinstance(value, TimerState):
                self._remember(key, value)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Revoked or newly assigned partitions: drop what is cached and never written of them."""
        for cache in (self._dirty, self._clean, self._unwritten):
            for key in [k for k in cache if self.partition_of(k) in partitions]:
                del cache[key]

    def _remember(self, key: bytes, state: TimerState) -> None:
        # Live ones only: an ended auction's state is read again rarely (a late bid, a deadline
        # fired again, its removal after the retention), and a worker ending a backlog of them
        # would otherwise fill the cache with states the fold does not read.
        if not state.live:
            return
        self._clean[key] = state
        if len(self._clean) > self.capacity:
            self._clean.popitem(last=False)
