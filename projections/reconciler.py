"""Reconciliation: Redis compared with the timer table for the partitions this worker owns.

A pass every interval compares the auctions that changed since the previous pass (once their
change has settled: the projection consumer has had its turn) and a slice of all the others,
so that every followed auction is compared at least once a sweep (`sweep_s`): a worker
following 200,000 auctions does not read and check all of them every few seconds.

Each pass ends by setting a marker in Redis (its number, under a key of this worker's own) and
reading back, in the same command, the one it replaces. A pass compares every followed auction
instead when Redis may have lost what was projected: after this worker started or was given
partitions, after a pass failed, when the marker is not there as the previous pass wrote it,
and after a pass that found its marker replaced meanwhile (FLUSHALL, a restart without
persistence, failover to a replica that had not copied it). Redis replicates in order, so a
replica holding a pass's marker holds every write made before it; what it may miss came later:
the repairs of the pass after it, and the projection's writes of changes since, which that
pass or the next compares. So each pass also compares again what the previous one compared,
and one pass after a loss makes the projection of live auctions whole. An ended auction is
followed until two passes in a row that lost nothing have found it ended; then its hash waits
out its TTL, and only a Reconcile command for it compares it again.

A missing entry, an older version, an ends_at (or status, or active-set score) off by
more than 250 ms (compared inside Redis by check.lua, BATCH auctions a call) is rewritten
with the same compare-and-set the projection uses, recorded in the capped stream
(projections/keys.py: `reconciliations`), audited, counted and logged. An auction Redis refuses
for good (projections/refusals.py) is reported whenever a pass compares it (at least once a
sweep) and the others are repaired.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError, ResponseError

from projections import refusals
from projections.metrics import CORRECTIONS, RECONCILE_PASSES
from projections.store import Projected, ProjectionStore, belongs_in_redis
from streams import outputs
from streams.effects import Audited
from streams.state import TimerState
from streams.tracing import current_trace_id

log = logging.getLogger("auction_timer.reconciler")

TOLERANCE_MS = 250
# A change this recent may simply not be projected yet; leave it to the projection consumer.
SETTLE_MS = 1_000
STREAM_MAXLEN = 10_000
# Auctions read and checked at a time: one batch's reads, decodes and argument packing run
# without a pause (about 5 ms at 200), so deadlines due meanwhile wait no longer than that.
BATCH = 200

Publish = Callable[[outputs.Record], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Correction:
    auction_id: str
    version: int
    what: str
    old: dict[str, Any] | None
    new: dict[str, Any]
    delta_ms: int | None
    traceparent: str

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]


class Reconciler:
    """Follows by id, with when each last changed, the live auctions (restored or seen) and
    those seen ending, until two passes have found them ended: then an ended auction's hash
    only waits out its TTL (a worker holding a million ended auctions follows none of them).
    `lookup` reads an auction's state when a pass checks it (None once it is not this worker's),
    so that 200,000 followed auctions cost ids, not states."""

    def __init__(
        self,
        store: ProjectionStore,
        interval_s: float,
        sweep_s: float,
        publish: Publish,
        clock: Callable[[], int],
        lookup: Callable[[str], TimerState | None],
    ) -> None:
        self.store = store
        self.interval_s = interval_s
        self.sweep_s = sweep_s
        self.publish = publish
        self.clock = clock
        self.lookup = lookup
        self.tracked: dict[str, int] = {}  # auction id -> when it last changed (0: restored)
        self._grown_to = 0  # the most it has followed since its table was last fitted (see _fit)
        self._changed: dict[str, None] = {}  # changed since their last check, oldest change first
        self._sweep: list[str] = []  # what the current sweep has not compared yet
        self._slice = 0  # taken from it a pass
        self._everything = True  # the next pass compares every followed auction
        self._last: list[str] = []  # what the previous pass compared: the next compares it again
        self._ended: set[str] = set()  # those of them it found ended (untracked when found so twice)
        self._generation = 0  # rebuilds so far
        self._marker = store.keys.reconciled(uuid.uuid4().hex)
        self._passes = 0  # the marker's value: passes completed
        self._requested: set[str] = set()
        self._wake = asyncio.Event()

    def request(self, auction_id: str) -> None:
        """A Reconcile command arrived: check this auction at once (off the agent's path)."""
        self._requested.add(auction_id)
        self._wake.set()

    def _keep(self, state: TimerState, now: int) -> bool:
        return belongs_in_redis(state, now, self.store.ended_ttl_s)

    def on_change(self, state: TimerState) -> None:
        self.tracked[state.auction_id] = self.clock()
        self._changed.pop(state.auction_id, None)  # to the back: its newest change is the latest
        self._changed[state.auction_id] = None

    def rebuild(self, auction_ids: Iterable[str]) -> None:
        """After a rebalance or restart: follow the owned partitions' live auctions, all of them
        compared by the next pass."""
        self.tracked = dict.fromkeys(auction_ids, 0)
        self._grown_to = len(self.tracked)
        self._changed, self._sweep, self._everything = {}, [], True
        self._generation += 1

    def revoke(self, auction_ids: Iterable[str]) -> None:
        self._grown_to = max(self._grown_to, len(self.tracked))
        for auction_id in auction_ids:
            self.tracked.pop(auction_id, None)
        self._fit()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        next_pass = loop.time() + self.interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), max(0.0, next_pass - loop.time()))
            self._wake.clear()
            requested, self._requested = list(self._requested), set()
            due = loop.time() >= next_pass
            if due:
                next_pass = loop.time() + self.interval_s
            if requested:
                await self._attempt(requested)
            if due:
                await self._attempt(None)

    async def _attempt(self, only: list[str] | None) -> None:
        try:
            fixed = await self.pass_once(only)
            RECONCILE_PASSES.labels("ok" if only is None else "requested").inc()
            if fixed:
                log.info("reconciliation pass corrected entries", extra={"corrections": len(fixed)})
        except (RedisError, OSError) as exc:
            RECONCILE_PASSES.labels("redis_error").inc()
            if only is not None:
                self._requested.update(only)  # asked again with the next pass
                self._wake.set()
            log.warning(
                "reconciliation pass failed; next pass retries", extra={"error": f"{type(exc).__name__}: {exc}"}
            )

    async def pass_once(self, only: Iterable[str] | None = None) -> list[Correction]:
        """Compare `only` these auctions at once, or, by default, a pass's share: the settled
        changes and the sweep's next slice, or every followed auction when Redis may have lost
        what was projected (see the module's doc)."""
        if only is not None:  # followed or not (an ended auction is let go once two passes found it ended)
            fixed = await self._check(list(dict.fromkeys(only)), settled_only=False, followed_only=False)
            self._last = list(dict.fromkeys(self._last + [c.auction_id for c in fixed]))  # compared again too
            return fixed
        generation = self._generation
        self._grown_to = max(self._grown_to, len(self.tracked))  # it only shrinks in passes and revokes
        changes = self._settled_changes(self.clock())
        everything, self._everything = self._everything, True  # True until this pass has done its share
        seen = _text(await self.store.client.get(self._marker))
        everything = everything or seen != (str(self._passes) if self._passes else None)
        again, self._last = self._last, []
        share = list(self.tracked) if everything else list(dict.fromkeys(changes + self._next_slice()))
        if everything:
            self._sweep = []
        # What the previous pass compared, once more: Redis may have lost its repairs, and the
        # projection's writes since, without the marker that pass ended with (see the module's doc).
        ended: set[str] = set()
        corrections = await self._check(again, settled_only=True, ended=ended)
        corrections += await self._check(share, settled_only=True, ended=ended)
        self._last = list(dict.fromkeys(share + [c.auction_id for c in corrections]))
        # Set and read back in one command: a marker other than the one this pass found means
        # Redis lost data during the pass, so the next compares everything.
        held = await self.store.client.set(
            self._marker, self._passes + 1, ex=max(3_600, int(10 * self.sweep_s)), get=True
        )
        self._passes += 1
        if _text(held) != seen or generation != self._generation:
            self._ended = set()
            return corrections
        self._everything = False
        # Found ended by two passes in a row that lost nothing: its hash waits out its TTL.
        for auction_id in ended & self._ended:
            self.tracked.pop(auction_id, None)
        self._ended = ended - self._ended
        self._fit()
        return corrections

    def _fit(self) -> None:
        """A dict keeps the table it grew to. A worker that ended a million auctions and let them
        go would keep theirs (about 30 MiB): copied into one that fits once under a quarter of
        it is used."""
        if len(self.tracked) * 4 < self._grown_to:
            self.tracked = dict(self.tracked)
            self._grown_to = len(self.tracked)

    def _settled_changes(self, now: int) -> list[str]:
        """Take the changes that have settled (oldest first) off the changed ones."""
        settled: list[str] = []
        pending = iter(self._changed)
        for auction_id in pending:
            changed_at = self.tracked.get(auction_id)
            if changed_at is not None and now - changed_at < SETTLE_MS:
                # Rebuilt, not deleted from the front one by one: a dict's iteration walks past
                # the slots of deleted entries, so that would cost the square of the changes.
                self._changed = {auction_id: None, **dict.fromkeys(pending)}
                return settled
            if changed_at is not None:
                settled.append(auction_id)
        self._changed = {}
        return settled

    def _next_slice(self) -> list[str]:
        """The sweep's share of this pass: every followed auction once every sweep_s."""
        if not self._sweep:
            self._sweep = list(self.tracked)
            self._slice = math.ceil(len(self._sweep) * self.interval_s / self.sweep_s)
        taken, self._sweep[-self._slice :] = self._sweep[-self._slice :], []
        return taken

    async def _check(
        self, candidates: list[str], settled_only: bool, followed_only: bool = True, ended: set[str] | None = None
    ) -> list[Correction]:
        """Compare and repair `candidates`; those found ended are added to `ended`."""
        corrections: list[Correction] = []
        for start in range(0, len(candidates), BATCH):
            now = self.clock()
            states = self._states(candidates[start : start + BATCH], now, settled_only, followed_only)
            if states:
                corrections += await self._reconcile(states, now)
            if ended is not None:
                ended.update(s.auction_id for s in states if not s.live)
        return corrections

    def _states(self, auction_ids: list[str], now: int, settled_only: bool, followed_only: bool) -> list[TimerState]:
        """The states of a batch, read at once; an auction revoked meanwhile (during the pass's
        awaits) is skipped, and one that no longer belongs in Redis is no longer followed. With
        `settled_only`, so is an auction whose latest change has not settled yet (it may not be
        projected yet; it is compared as a change once it has)."""
        states = []
        for auction_id in auction_ids:
            changed_at = self.tracked.get(auction_id)
            if changed_at is None and followed_only:
                continue
            if settled_only and changed_at is not None and now - changed_at < SETTLE_MS:
                continue
            try:
                state = self.lookup(auction_id)
            except Exception:  # an unreadable state must not stop the passes; the next one retries
                log.exception("reconciler could not read a state", extra={"auction_id": auction_id})
                continue
            if state is None or not self._keep(state, now):
                self.tracked.pop(auction_id, None)
                continue
            states.append(state)
        return states

    async def _reconcile(self, states: list[TimerState], now: int) -> list[Correction]:
        """Check and repair one batch. An auction Redis refuses for good (projections/refusals.py)
        is reported and left out; the rest of the batch is checked and repaired."""
        by_id = {s.auction_id: s for s in states}
        checked = await self.store.find_wrong([Projected.of(s.public()) for s in states], TOLERANCE_MS)
        for auction_id, exc in checked.refused.items():
            refusals.report("reconciler", auction_id, exc, log)
        if not checked.wrong:
            return []
        results = await self.store.write([expected for expected, _, _ in checked.wrong], "repair", now)
        corrections = []
        for (expected, reason, old), result in zip(checked.wrong, results, strict=True):
            if isinstance(result, ResponseError):
                refusals.report("reconciler", expected.auction_id, result, log)
                continue
            if not result:
                continue  # the live projection wrote something newer meanwhile: nothing to fix
            state = by_id[expected.auction_id]
            delta = None if old is None else expected.ends_at_ms - old["ends_at_ms"]
            corrections.append(
                Correction(
                    state.auction_id, state.version, reason, old, dict(expected.fields), delta, state.traceparent
                )
            )
        await self._record(corrections, now)
        return corrections

    async def _record(self, corrections: list[Correction], now: int) -> None:
        """Each correction into the capped stream, the log, the metric and the audit topic. The
        stream is a record for operators: when Redis refuses it for good (a wrong type, an ACL),
        that is reported and the rest still happens."""
        if not corrections:
            return
        pipe = self.store.client.pipeline(transaction=False)
        for c in corrections:
            pipe.xadd(
                self.store.keys.reconciliations,
                {
                    "auction_id": c.auction_id,
                    "what": c.what,
                    "old": orjson.dumps(c.old).decode(),
                    "new": orjson.dumps(c.new).decode(),
                    "delta_ms": "" if c.delta_ms is None else c.delta_ms,
                    "trace_id": c.trace_id,
                    "at_ms": now,
                },
                maxlen=STREAM_MAXLEN,
                approximate=True,
            )
        results = await pipe.execute(raise_on_error=False)
        for c, result in zip(corrections, results, strict=True):
            if isinstance(result, ResponseError) and refusals.is_permanent(result):
                refusals.report("reconciliations_stream", c.auction_id, result, log)
            elif isinstance(result, Exception):
                raise result
        for c in corrections:
            CORRECTIONS.labels(c.what).inc()
            token = current_trace_id.set(c.trace_id)
            try:
                log.info(
                    "projection corrected",
                    extra={"auction_id": c.auction_id, "what": c.what, "version": c.version, "delta_ms": c.delta_ms,
                           "old_version": c.old["version"] if c.old else None},
                )  # fmt: skip
            finally:
                current_trace_id.reset(token)
            entry = Audited(
                "reconciled", c.auction_id, c.version, f"reconcile-{now}", "reconciliation", c.traceparent,
                c.what, {"old": c.old, "new": c.new, "delta_ms": c.delta_ms},
            )  # fmt: skip
            record_id = f"{c.auction_id}:reconcile-{now}:reconciled"
            await self.publish(outputs.audit(entry, now, record_id, source="urn:auction-timer:reconciler"))


def _text(value: object) -> str | None:
    """A Redis reply as text, whether the client decodes replies or not."""
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)
