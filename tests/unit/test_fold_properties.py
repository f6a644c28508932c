"""Properties of the fold over generated event histories (hypothesis)."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from streams import events as ev
from streams.effects import Effect, TimerChanged
from streams.fold import apply
from streams.state import TimerState
from tests.support.events import T0

AUCTION = "prop-1"


@dataclass(frozen=True)
class History:
    registration: ev.Envelope
    events: list[ev.Envelope]


@st.composite
def policies(draw: st.DrawFn) -> ev.Policy:
    return ev.Policy(
        soft_close_window_ms=draw(st.integers(0, 120_000)),
        extension_ms=draw(st.integers(1, ev.MAX_EXTENSION_STEP_MS)),
        max_extension_ms=draw(st.integers(0, ev.MAX_EXTENSION_TOTAL_MS)),
    )


@st.composite
def histories(draw: st.DrawFn) -> History:
    starts = T0 + draw(st.integers(-10_000, 10_000))
    ends = starts + draw(st.integers(1, 600_000))
    policy = draw(policies())
    counter = iter(range(10_000))

    def env(payload: ev.Payload, time_ms: int) -> ev.Envelope:
        return ev.Envelope(f"e{next(counter)}", ev.TYPE_OF[type(payload)], "prop", time_ms,
                           "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01", payload)  # fmt: skip

    registration = env(ev.AuctionStarted(AUCTION, starts, ends, policy, "m"), T0)
    horizon = ends + policy.max_extension_ms + 10_000
    instants = st.integers(starts - 10_000, horizon)
    events: list[ev.Envelope] = []
    for _ in range(draw(st.integers(0, 40))):
        choice = draw(st.sampled_from(["bid", "bid", "bid", "expire", "start", "cancel", "dup", "reregister"]))
        if choice == "bid":
            at = draw(instants)
            events.append(env(ev.BidPlaced(AUCTION, f"b{len(events)}", "u", "1", at), at))
        elif choice == "expire":
            at = draw(instants)
            events.append(env(ev.ExpireTimer(AUCTION, draw(st.integers(1, 12)), at), at))
        elif choice == "start":
            at = draw(instants)
            events.append(env(ev.StartTimer(AUCTION, draw(st.integers(1, 12)), at), at))
        elif choice == "cancel" and draw(st.booleans()):
            events.append(env(ev.AuctionCancelled(AUCTION, "r", "admin"), draw(instants)))
        elif choice == "dup" and events:
            events.append(draw(st.sampled_from([registration, *events])))
        elif choice == "reregister":
            events.append(env(ev.AuctionStarted(AUCTION, starts, ends, policy, "m"), T0))
    return History(registration, events)


def run(history: History) -> list[tuple[TimerState, TimerState, list[Effect], ev.Envelope]]:
    steps = []
    state, _ = apply(None, history.registration)
    assert state is not None
    for env in history.events:
        new, effects = apply(state, env)
        assert new is not None
        steps.append((state, new, effects, env))
        state = new
    return steps


@settings(max_examples=400, deadline=None)
@given(histories())
def test_ends_at_never_passes_the_cap(history: History) -> None:
    for _, new, _, _ in run(history):
        assert new.ends_at_ms <= new.original_ends_at_ms + new.policy.max_extension_ms
        assert new.extension_total_ms == new.ends_at_ms - new.original_ends_at_ms
        assert 0 <= new.extension_total_ms <= ev.MAX_EXTENSION_TOTAL_MS


@settings(max_examples=400, deadline=None)
@given(histories())
def test_an_extension_never_goes_past_bid_plus_extension(history: History) -> None:
    for old, new, _, env in run(history):
        if new.ends_at_ms != old.ends_at_ms:
            assert isinstance(env.data, ev.BidPlaced)
            assert new.ends_at_ms > old.ends_at_ms
            assert new.ends_at_ms <= env.data.placed_at_ms + new.policy.extension_ms
            assert old.ends_at_ms - new.policy.soft_close_window_ms <= env.data.placed_at_ms < old.ends_at_ms


@settings(max_examples=400, deadline=None)
@given(histories())
def test_version_moves_by_one_exactly_when_state_changes(history: History) -> None:
    for old, new, _, _ in run(history):
        if new == old:
            assert new is old
        else:
            assert new.version == old.version + 1


@settings(max_examples=300, deadline=None)
@given(histories())
def test_an_input_seen_again_changes_nothing(history: History) -> None:
    seen: set[str] = {history.registration.id}
    for old, new, _, env in run(history):
        if env.id in seen and env.id in (*old.recent_event_ids, old.registered_event_id):
            assert new is old
        seen.add(env.id)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_same_events_same_order_same_result(history: History) -> None:
    first = [(new, effects) for _, new, effects, _ in run(history)]
    second = [(new, effects) for _, new, effects, _ in run(history)]
    assert first == second


@settings(max_examples=400, deadline=None)
@given(histories())
def test_at_most_one_ending_per_auction(history: History) -> None:
    endings = [
        effect
        for _, _, effects, _ in run(history)
        for effect in effects
        if isinstance(effect, TimerChanged) and effect.kind in ("completed", "cancelled") and not effect.redelivery
    ]
    assert len(endings) <= 1
    if endings and endings[0].kind == "completed":
        state = endings[0].state
        assert state.ended_at_ms is not None and state.ended_at_ms >= state.ends_at_ms
