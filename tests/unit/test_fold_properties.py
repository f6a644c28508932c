"""Properties of the fold and of the log order, against an independent model (hypothesis).

`Model` re-states the product rules from the README in the plainest way (a dict and a few
ifs, no code shared with streams/fold.py); the fold must agree with it on every generated
history. The merge properties feed `Merger` the same records in any arrival interleaving,
with truthful "caught up" evidence at random moments, and require the log's own order out.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from streams import events as ev
from streams import topics
from streams.effects import Audited, Effect, TimerChanged
from streams.fold import Rules, apply, position
from streams.order import Merger
from streams.state import RECENT_KEYS, TimerState
from tests.support.events import T0

AUCTION = "prop-1"
TRACE = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
RANK = {name: i for i, name in enumerate(topics.INPUT_TOPICS)}


@dataclass
class Model:
    """The timer rules, written out plainly."""

    lateness: int
    timer: dict[str, Any] | None = None
    changers: deque[tuple[str, str, str]] | None = None

    def feed(self, env: ev.Envelope) -> bool:
        """Fold one input; True when it is an upstream duplicate of an event that changed the timer."""
        d, t = env.data, self.timer
        key = (env.source, env.type, env.id)
        if t is not None and self.changers is not None and key in self.changers:
            return True
        self._feed(env, d, t, key)
        return False

    def _feed(self, env: ev.Envelope, d: ev.Payload, t: dict[str, Any] | None, key: tuple[str, str, str]) -> None:
        if isinstance(d, ev.AuctionStarted):
            if t is None:
                self.timer = {"version": 1, "end": d.ends_at_ms, "original": d.ends_at_ms, "start": d.starts_at_ms,
                              "policy": d.policy, "status": "running" if env.log_ms >= d.starts_at_ms else "scheduled",
                              "ended_at": None, "extensions": 0}  # fmt: skip
                self.changers = deque([key], maxlen=RECENT_KEYS)
            return
        if t is None or t["status"] in ("ended", "cancelled"):
            return
        if t["status"] == "scheduled" and env.log_ms >= t["start"] and not isinstance(d, ev.StartTimer):
            self._change(key, status="running")
        if isinstance(d, ev.StartTimer):
            if t["status"] == "scheduled" and d.version == t["version"] and env.log_ms >= t["start"]:
                self._change(key, status="running")
        elif isinstance(d, ev.AuctionCancelled):
            self._change(key, status="cancelled", ended_at=env.log_ms)
        elif isinstance(d, ev.ExpireTimer):
            if d.version == t["version"] and env.log_ms >= t["end"] + self.lateness:
                self._change(key, status="ended", ended_at=env.log_ms)
        elif isinstance(d, ev.BidPlaced):
            p, end, pol = d.placed_at_ms, t["end"], t["policy"]
            in_time = env.log_ms < end + self.lateness
            if in_time and t["start"] <= p < end and p >= end - pol.soft_close_window_ms:
                new_end = min(p + pol.extension_ms, t["original"] + pol.max_extension_ms)
                if new_end > end:
                    self._change(key, end=new_end, extensions=t["extensions"] + 1, status="running")

    def _change(self, key: tuple[str, str, str], **fields: Any) -> None:
        assert self.timer is not None and self.changers is not None
        self.timer.update(fields, version=self.timer["version"] + 1)
        if key not in self.changers:
            self.changers.append(key)

    def summary(self) -> tuple[Any, ...] | None:
        t = self.timer
        return None if t is None else (t["version"], t["status"], t["end"], t["extensions"], t["ended_at"])


def summary(state: TimerState | None) -> tuple[Any, ...] | None:
    if state is None:
        return None
    return (state.version, state.status, state.ends_at_ms, state.extension_count, state.ended_at_ms)


@st.composite
def histories(draw: st.DrawFn) -> list[ev.Envelope]:
    """An auction's inputs in log order: registration, bids, commands, cancels, duplicates.
    Log times rise; bids are placed up to a few seconds before the log took them."""
    starts = T0 + draw(st.integers(-5_000, 5_000))
    ends = starts + draw(st.integers(1, 60_000))
    policy = ev.Policy(
        soft_close_window_ms=draw(st.integers(0, 30_000)),
        extension_ms=draw(st.integers(1, 20_000)),
        max_extension_ms=draw(st.integers(0, 60_000)),
    )
    counter = iter(range(10_000))
    offsets = dict.fromkeys(RANK, 0)
    log_ms = T0 - 10_000

    def env(payload: ev.Payload, at: int, source: str = "prop", event_id: str | None = None) -> ev.Envelope:
        topic = {ev.AuctionStarted: topics.AUCTION_STARTED, ev.BidPlaced: topics.BID_PLACED,
                 ev.AuctionCancelled: topics.AUCTION_CANCELLED}.get(type(payload), topics.COMMANDS)  # fmt: skip
        offsets[topic] += 1
        return ev.Envelope(event_id or f"e{next(counter)}", ev.TYPE_OF[type(payload)], source, at, TRACE, payload,
                           log_ms=at, topic_index=RANK[topic], offset=offsets[topic])  # fmt: skip

    out = [env(ev.AuctionStarted(AUCTION, starts, ends, policy, "m"), log_ms)]
    for _ in range(draw(st.integers(0, 30))):
        log_ms += draw(st.integers(0, 8_000))
        if draw(st.integers(0, 4)) == 0:  # often right at the (original) deadline, where it matters
            log_ms = max(log_ms, ends + draw(st.sampled_from([-1, 0, 1, 249, 250, 251, 500, 2_000])))
        choice = draw(st.sampled_from(["bid", "bid", "bid", "bid", "expire", "start", "cancel", "dup", "again"]))
        if choice == "bid":
            at = log_ms - draw(st.integers(0, 3_000))
            out.append(env(ev.BidPlaced(AUCTION, f"b{len(out)}", "u", "1", at), log_ms))
        elif choice in ("expire", "start"):
            kind = ev.ExpireTimer if choice == "expire" else ev.StartTimer
            out.append(env(kind(AUCTION, draw(st.integers(1, 6)), log_ms), log_ms))
        elif choice == "cancel" and draw(st.integers(0, 3)) == 0:
            out.append(env(ev.AuctionCancelled(AUCTION, "r", "admin"), log_ms))
        elif choice == "dup" and len(out) > 1:
            # The producer sends an event again: same source, type and id, a new record.
            original = out[-draw(st.integers(1, min(6, len(out))))]
            out.append(env(original.data, log_ms, original.source, original.id))
        elif choice == "again":
            out.append(env(ev.AuctionStarted(AUCTION, starts, ends, policy, "m"), log_ms))
    # In the order the worker folds them: the log's (time, then topic, then offset).
    return sorted(out, key=position)


def fold_all(
    history: list[ev.Envelope], rules: Rules, duplicates: list[bool] | None = None
) -> tuple[TimerState | None, list[TimerChanged]]:
    """Fold the history; `duplicates` (when given) collects which inputs were audited as duplicates."""
    state: TimerState | None = None
    changes: list[TimerChanged] = []
    for env in history:
        new, effects = apply(state, env, rules)
        if duplicates is not None:
            duplicates.append(any(isinstance(e, Audited) and e.reason == "event_id_seen" for e in effects))
        if new is not None and new is not state:
            assert new.version == (state.version if state else 0) + len(
                [e for e in effects if isinstance(e, TimerChanged)]
            )
        changes += [e for e in effects if isinstance(e, TimerChanged)]
        state = new
    return state, changes


@settings(max_examples=500, deadline=None)
@given(histories(), st.sampled_from([0, 250, 2_000]))
def test_the_fold_agrees_with_the_model(history: list[ev.Envelope], lateness: int) -> None:
    duplicates: list[bool] = []
    state, changes = fold_all(history, Rules(lateness), duplicates)
    model = Model(lateness)
    assert duplicates == [model.feed(env) for env in history]
    assert summary(state) == model.summary()
    assert [c.state.version for c in changes] == list(range(1, len(changes) + 1))
    assert len([c for c in changes if c.kind in ("completed", "cancelled")]) <= 1


@settings(max_examples=300, deadline=None)
@given(histories(), st.sampled_from([0, 500]))
def test_no_bid_the_log_took_in_time_is_lost_to_the_completion(history: list[ev.Envelope], lateness: int) -> None:
    """Every bid placed in the window that the log took before end + lateness was applied before
    the completion: the completion's time is never before such a bid's time."""
    _, changes = fold_all(history, Rules(lateness))
    completed = [c for c in changes if c.kind == "completed"]
    if not completed:
        return
    ended = completed[0].state
    assert ended.ended_at_ms is not None and ended.ended_at_ms >= ended.ends_at_ms + lateness
    for env in history:
        bid = env.data
        if isinstance(bid, ev.BidPlaced) and env.log_ms < ended.ends_at_ms + lateness:
            assert env.log_ms <= ended.ended_at_ms


@settings(max_examples=400, deadline=None)
@given(histories(), st.sampled_from([0, 500]), st.data())
def test_a_crash_anywhere_then_redelivery_publishes_exactly_what_was_published(
    history: list[ev.Envelope], lateness: int, data: st.DataObject
) -> None:
    """The worker stores a version only after everything folded before it was published, and
    commits inputs later still. So after a crash: the stored state is the one after some input k,
    inputs from some c <= k + 1 come again, and each must publish nothing (it was folded before
    the stored version) or exactly what it published the first time (same effects)."""
    rules = Rules(lateness)
    states: list[TimerState | None] = []
    first: list[list[Effect]] = []
    state: TimerState | None = None
    for env in history:
        state, effects = apply(state, env, rules)
        states.append(state)
        first.append(effects)
    k = data.draw(st.integers(0, len(history) - 1))
    # The store holds the newest version made at or before input k (the changelog lags the fold).
    stored = states[k]
    c = data.draw(st.integers(0, k + 1))
    state = stored
    for i in range(c, len(history)):
        again, effects = apply(state, history[i], rules)
        made_stored = (
            stored is not None
            and i <= k
            and history[i].topic_index >= 0
            and (position(history[i]) <= stored.changed_by)
        )
        assert effects == ([] if made_stored else first[i]), i
        state = again
    assert state == states[-1]


@st.composite
def arrivals(draw: st.DrawFn) -> tuple[list[tuple[int, int, int]], list[tuple[str, int, int]]]:
    """Records of one partition number on the four input topics (log time, rank, offset), and a
    random arrival order that keeps each partition's order, with truthful evidence in between."""
    records = []
    for rank in range(4):
        times = sorted(draw(st.lists(st.integers(0, 50), max_size=12)))
        records += [(t, rank, offset) for offset, t in enumerate(times)]
    rng = random.Random(draw(st.integers(0, 2**32)))
    queues = {r: deque(rec for rec in records if rec[1] == r) for r in range(4)}
    steps: list[tuple[str, int, int]] = []
    while any(queues.values()):
        rank = rng.choice([r for r in range(4)])
        if queues[rank] and rng.random() < 0.7:
            steps.append(("record", rank, queues[rank].popleft()[2]))
        else:  # evidence: nothing unseen at or before a time below the next unseen record
            nxt = queues[rank][0][0] if queues[rank] else 10_000
            steps.append(("caught_up", rank, nxt - 1 - rng.randint(0, 3)))
    return records, steps


@settings(max_examples=500, deadline=None)
@given(arrivals())
def test_any_arrival_order_gives_the_log_order(case: tuple[list[tuple[int, int, int]], list[Any]]) -> None:
    records, steps = case
    by_key = {(rank, offset): (t, rank, offset) for t, rank, offset in records}
    merger: Merger[tuple[int, int, int]] = Merger(4)
    released: list[tuple[int, int, int]] = []
    for kind, rank, value in steps:
        if kind == "record":
            rec = by_key[(rank, value)]
            merger.add(rank, [(rec[0], rec[2], rec)])
        else:
            merger.caught_up(rank, value)
        released += merger.pop_ready()
    merger.everything_seen()
    released += merger.pop_ready()
    assert released == sorted(records)  # log time, then topic rank, then offset


def test_the_merge_of_a_shuffled_history_folds_like_the_log() -> None:
    """A fixed example of the whole chain: bids that reach the worker after the command that
    would complete the auction still come out first, because the log took them first."""
    reg = ev.Envelope("r", ev.AUCTION_STARTED, "t", T0, TRACE,
                      ev.AuctionStarted(AUCTION, T0, T0 + 1_000, ev.Policy(500, 500, 5_000), "m"),
                      log_ms=T0, topic_index=0, offset=0)  # fmt: skip
    bid = ev.Envelope("b", ev.BID_PLACED, "t", T0 + 990, TRACE, ev.BidPlaced(AUCTION, "b", "u", "1", T0 + 990),
                      log_ms=T0 + 995, topic_index=1, offset=0)  # fmt: skip
    expire = ev.Envelope("x", ev.EXPIRE_TIMER, "t", T0 + 1_000, TRACE, ev.ExpireTimer(AUCTION, 1, T0 + 1_000),
                         log_ms=T0 + 1_000, topic_index=3, offset=0)  # fmt: skip
    merger: Merger[ev.Envelope] = Merger(4)
    merger.add(3, [(expire.log_ms, 0, expire)])  # the command is fetched first
    merger.add(0, [(reg.log_ms, 0, reg)])
    merger.caught_up(2, T0 + 5_000)  # no cancellation up to T0 + 5 s
    assert merger.pop_ready() == []  # the bid partition's tail is unknown: nothing may go yet
    assert merger.blocked_on() == [1]
    merger.caught_up(1, T0 + 500)  # an end-offset lookup: no bid up to T0 + 500
    assert [e.id for e in merger.pop_ready()] == ["r"]
    merger.caught_up(0, T0 + 5_000)  # no other registration
    merger.add(1, [(bid.log_ms, 0, bid)])  # the bid arrives after the command
    ordered = [reg, *merger.pop_ready()]
    assert [e.id for e in ordered] == ["r", "b"]  # the command waits for the bids' tail
    merger.caught_up(1, T0 + 1_000)
    ordered += merger.pop_ready()
    assert [e.id for e in ordered] == ["r", "b", "x"]
    state, _ = fold_all(ordered, Rules())
    assert state is not None and (state.status, state.ends_at_ms) == ("running", T0 + 1_490)
