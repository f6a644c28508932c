"""What the scheduler must do next, as pure bookkeeping over a min-heap (no clock, no I/O).

Entries are lazily invalidated: a change pushes fresh entries, and an entry whose auction
moved on (new version, ended, untracked) is dropped when it surfaces. Of each live timer it
keeps only what planning needs (`Planned`): with its heap entries about 400 bytes, where a
decoded state alone is 1.4 KB. A due entry names the auction and version, and the scheduler
reads the state when it acts on it.

Each live auction has one deadline (its start while scheduled, else its end plus the allowed
lateness) and, until that deadline, one next tick. Periodic ticks go through Kafka only for
auctions within `tick_horizon_ms` of their end (the gateway ticks its viewers of the others
from the state it holds), so Kafka's tick traffic grows with auctions near their end, not
with the catalogue; ticks are phased per auction so 10,000 timers do not tick at once.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Literal

from streams.state import TimerState

DueKind = Literal["expire", "start", "tick"]
# A fired deadline whose command has not come back applied is fired again: soon at first (the
# brokers' clocks may be a few ms behind the worker's, so the fold found it not yet due), then
# backing off to REFIRE_MS (the worker may be behind the log and fold it only later).
REFIRE_FIRST_MS = 100
REFIRE_MS = 5_000


@dataclass(frozen=True, slots=True)
class Planned:
    """What the schedule keeps of a live timer."""

    version: int
    ends_at_ms: int
    scheduled: bool  # not started yet: its deadline is the start

    @classmethod
    def of(cls, state: TimerState) -> Planned:
        return cls(state.version, state.ends_at_ms, state.status == "scheduled")


@dataclass(frozen=True, slots=True)
class Due:
    kind: DueKind
    due_ms: int
    auction_id: str
    version: int
    seq: int = 0  # tick sequence for this auction (ticks only)


@dataclass
class Schedule:
    tick_interval_ms: int
    tick_horizon_ms: int = 300_000
    lateness_ms: int = 0
    live: dict[str, Planned] = field(default_factory=dict)
    _heap: list[tuple[int, int, DueKind, str, int]] = field(default_factory=list)
    _next_tick: dict[str, int] = field(default_factory=dict)
    _tick_seq: dict[str, int] = field(default_factory=dict)
    _refires: dict[tuple[str, int, DueKind], int] = field(default_factory=dict)
    _counter: int = 0

    def __len__(self) -> int:
        return len(self.live)

    def _push(self, due_ms: int, kind: DueKind, auction_id: str, version: int) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (due_ms, self._counter, kind, auction_id, version))

    def track(self, state: TimerState, now_ms: int) -> None:
        """Follow `state` (a new version or a restored one); ended timers leave the schedule."""
        current = self.live.get(state.auction_id)
        if current is not None and current.version >= state.version:
            # An older copy (a restore racing the agent) never replaces a newer one, and the same
            # version again (an input redelivered after a crash) is already scheduled.
            return
        if not state.live:
            self.forget(state.auction_id)
            return
        if current is not None:
            for kind in ("expire", "start"):
                self._refires.pop((state.auction_id, current.version, kind), None)
        self.live[state.auction_id] = Planned.of(state)
        if state.status == "scheduled":
            self._push(state.starts_at_ms, "start", state.auction_id, state.version)
        self._push(state.ends_at_ms + self.lateness_ms, "expire", state.auction_id, state.version)
        if state.auction_id not in self._next_tick:
            self.schedule_tick(state.auction_id, now_ms)

    def schedule_tick(self, auction_id: str, after_ms: int) -> None:
        """The next periodic tick is one interval after `after_ms` (a tick that just went out),
        or when the auction comes within the tick horizon of its end, whichever is later."""
        planned = self.live.get(auction_id)
        if planned is None:
            return
        due = max(after_ms + self.tick_interval_ms, planned.ends_at_ms - self.tick_horizon_ms)
        if due > planned.ends_at_ms + self.lateness_ms:
            # Past its deadline a timer waits for its completion, which ticks as a change. A
            # worker folding a backlog holds thousands of those: ticking them every interval
            # would be a storm of zeros (the gateway ticks their viewers meanwhile).
            self._next_tick.pop(auction_id, None)
            return
        self._next_tick[auction_id] = due
        self._push(due, "tick", auction_id, planned.version)

    def next_tick_seq(self, auction_id: str) -> int:
        seq = self._tick_seq.get(auction_id, 0) + 1
        self._tick_seq[auction_id] = seq
        return seq

    def forget(self, auction_id: str) -> None:
        planned = self.live.pop(auction_id, None)
        if planned is not None:
            for kind in ("expire", "start"):
                self._refires.pop((auction_id, planned.version, kind), None)
        self._next_tick.pop(auction_id, None)
        self._tick_seq.pop(auction_id, None)

    def clear(self) -> None:
        self._refires.clear()
        self.live.clear()
        self._heap.clear()
        self._next_tick.clear()
        self._tick_seq.clear()

    def _valid(self, kind: DueKind, auction_id: str, version: int, due_ms: int) -> Planned | None:
        planned = self.live.get(auction_id)
        if planned is None:
            return None
        if kind == "tick":
            return planned if self._next_tick.get(auction_id) == due_ms else None
        if planned.version != version:
            return None
        if kind == "start" and not planned.scheduled:
            return None
        return planned

    def next_due_ms(self) -> int | None:
        while self._heap:
            due_ms, _, kind, auction_id, version = self._heap[0]
            if self._valid(kind, auction_id, version, due_ms) is not None:
                return due_ms
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now_ms: int) -> list[Due]:
        """Everything due at `now_ms`. Fired deadlines are re-armed REFIRE_MS later, and a tick
        re-arms itself, so nothing is lost if a command or tick goes astray."""
        out: list[Due] = []
        while self._heap and self._heap[0][0] <= now_ms:
            due_ms, _, kind, auction_id, version = heapq.heappop(self._heap)
            planned = self._valid(kind, auction_id, version, due_ms)
            if planned is None:
                continue
            if kind == "tick":
                out.append(Due(kind, due_ms, auction_id, planned.version, self.next_tick_seq(auction_id)))
                # Keep the phase; after a stall, skip the missed ticks rather than burst them.
                behind = now_ms - due_ms >= self.tick_interval_ms
                self.schedule_tick(auction_id, now_ms if behind else due_ms)
            else:
                out.append(Due(kind, due_ms, auction_id, version))
                fired = self._refires.get((auction_id, version, kind), 0)
                self._refires[(auction_id, version, kind)] = fired + 1
                self._push(now_ms + min(REFIRE_FIRST_MS << fired, REFIRE_MS), kind, auction_id, version)
        return out

    def tick_now(self, state: TimerState, now_ms: int) -> int:
        """A tick goes out at once for this change; returns its seq and restarts the tick phase."""
        seq = self.next_tick_seq(state.auction_id)
        if state.live:
            self.schedule_tick(state.auction_id, now_ms)
        return seq
