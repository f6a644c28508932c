"""Timer states for the fold: decoded once, cached, and held back from the store until the
changelog has them.

The store (Faust's table storage) only ever holds what the changelog holds, as in Faust's
own model. A version the fold made waits here ("dirty") until the records it caused and its
changelog record are acknowledged by Kafka; only then is it written through. So a partition
revoked mid-flight leaves nothing behind that the changelog does not know, and a state read
back after a restart is never newer than what consumers were sent.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from streams.state import TimerState, decode_state, encode_state


class RawStore(Protocol):
    """The table's storage by partition: bytes in, bytes out."""

    def get(self, key: bytes, partition: int) -> bytes | None: ...

    def put(self, key: bytes, partition: int, value: bytes | None) -> None: ...

    def persisted(self, partition: int, changelog_offset: int) -> None: ...


class StateCache:
    def __init__(self, raw: RawStore, partition_of: Callable[[bytes], int], capacity: int = 100_000) -> None:
        self.raw = raw
        self.partition_of = partition_of
        self.capacity = capacity
        self._unwritten: dict[bytes, TimerState] = {}  # made since the last take_unwritten()
        self._dirty: dict[bytes, TimerState] = {}  # newest version per key not yet in the store
        self._clean: OrderedDict[bytes, TimerState] = OrderedDict()  # decoded store contents, LRU

    def get(self, key: bytes) -> TimerState | None:
        state = self._dirty.get(key)
        if state is not None:
            return state
        state = self._clean.get(key)
        if state is not None:
            self._clean.move_to_end(key)
            return state
        raw = self.raw.get(key, self.partition_of(key))
        if raw is None:
            return None
        state = decode_state(raw)
        self._remember(key, state)
        return state

    def put(self, key: bytes, state: TimerState) -> None:
        self._dirty[key] = state
        self._unwritten[key] = state

    def take_unwritten(self) -> dict[bytes, TimerState]:
        """The newest version of each key changed since the last call: one changelog record each."""
        taken, self._unwritten = self._unwritten, {}
        return taken

    def written(self, key: bytes, state: TimerState) -> None:
        """The changelog has `state`: write it through to the store."""
        self.raw.put(key, self.partition_of(key), encode_state(state))
        if self._dirty.get(key) is state:
            del self._dirty[key]
            self._remember(key, state)

    def forget_partitions(self, partitions: set[int]) -> None:
        """Revoked or newly assigned partitions: drop what is cached and never written of them."""
        for cache in (self._dirty, self._clean, self._unwritten):
            for key in [k for k in cache if self.partition_of(k) in partitions]:
                del cache[key]

    def _remember(self, key: bytes, state: TimerState) -> None:
        self._clean[key] = state
        if len(self._clean) > self.capacity:
            self._clean.popitem(last=False)
