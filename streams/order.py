"""One order for co-partitioned input partitions, defined by the log (pure, no I/O, no clock).

Partition p of every input topic holds the same auctions, so the worker folds them as one
stream: records in order of the broker's append time, ties broken by topic rank (a
registration before a bid before a cancellation before a command), each partition's own
records always in offset order. This is Kafka Streams' stream-time synchronisation of a
task's partitions, made strict: a record is released only when every other partition
either has a later record buffered or is known to hold nothing unseen up to the record's
time ("caught up", from an end-offset lookup). So a bid never overtakes its registration
and a completion never overtakes a bid the log took before it, however the records were
fetched; replay, which has every record, releases them in exactly the same order.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
UNKNOWN = -1
FOREVER = 2**63


def order_time(previous_ms: int, timestamp_ms: int, stamped: bool) -> int:
    """Where a record of one partition sits in time, given the one before it: its append time,
    but never before the previous record's (a broker clock stepped back, or a leader moved to a
    broker whose clock is behind: a partition's later records must not look folded already);
    a record its producer stamped (dead-lettered anyway) takes its partition's last broker time."""
    return max(previous_ms, timestamp_ms) if stamped else previous_ms


@dataclass
class Merger(Generic[T]):
    """The buffered records of one partition number, `ranks` input partitions of it."""

    ranks: int
    _queues: list[deque[tuple[int, int, T]]] = field(init=False)
    _caught_up_at: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self._queues = [deque() for _ in range(self.ranks)]
        self._caught_up_at = [UNKNOWN] * self.ranks

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues)

    def add(self, rank: int, records: Iterable[tuple[int, int, T]]) -> None:
        """Records of partition `rank`, in offset order, as (log time ms, offset, item)."""
        self._queues[rank].extend(records)

    def caught_up(self, rank: int, as_of_ms: int) -> None:
        """Partition `rank` holds nothing unseen that the log took at or before `as_of_ms`."""
        if as_of_ms > self._caught_up_at[rank]:
            self._caught_up_at[rank] = as_of_ms

    def everything_seen(self) -> None:
        """No record will be added any more (replay): release all."""
        self._caught_up_at = [FOREVER] * self.ranks

    def pop_ready(self, at_most: int = FOREVER) -> list[T]:
        """The records that can be released now, in the log's order: all of them, or the first `at_most`."""
        queues, caught, ranks = self._queues, self._caught_up_at, range(self.ranks)
        out: list[T] = []
        while len(out) < at_most:
            heads = [(q[0][0], r) for r, q in enumerate(queues) if q]
            if not heads:
                return out
            best = min(heads)[1]
            # The best queue goes first while its head stays before every other head and no
            # empty partition could still hold an unseen record before it: a run, cheap when
            # one topic flows and the others are idle.
            limit = min((h for h in heads if h[1] != best), default=(FOREVER, 0))
            bound = min((caught[r] for r in ranks if r != best and not queues[r]), default=FOREVER)
            queue = queues[best]
            released = 0
            while queue and len(out) < at_most:
                log_ms = queue[0][0]
                if (log_ms, best) > limit or log_ms > bound:
                    break
                out.append(queue.popleft()[2])
                released += 1
            if not released:
                return out
        return out

    def blocked_on(self) -> list[int]:
        """The empty partitions whose unknown tail holds back the next record (ask their end offsets)."""
        heads = [q[0][0] for q in self._queues if q]
        if not heads:
            return []
        first = min(heads)
        return [r for r, q in enumerate(self._queues) if not q and self._caught_up_at[r] < first]

    def queued(self, rank: int) -> int:
        return len(self._queues[rank])

    def drop(self) -> list[T]:
        """Forget everything buffered (the partition was revoked); returns what was dropped."""
        dropped = [item for q in self._queues for _, _, item in q]
        for q in self._queues:
            q.clear()
        self._caught_up_at = [UNKNOWN] * self.ranks
        return dropped
