"""The stored form of a timer: what the changelog holds, operators read, and replay decodes."""

from __future__ import annotations

from dataclasses import asdict, replace

import orjson
from hypothesis import given
from hypothesis import strategies as st

from streams import events as ev
from streams.state import Expired, TimerState, decode_expired, decode_state, encode_state, stored_live

ints = st.integers(min_value=0, max_value=2**53)
states = st.builds(
    TimerState,
    status=st.sampled_from(["scheduled", "running", "ended", "cancelled"]),
    auction_id=st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True),
    version=ints,
    starts_at_ms=ints,
    original_ends_at_ms=ints,
    ends_at_ms=ints,
    policy=st.builds(ev.Policy, ints, ints, ints),
    maker_id=st.text(max_size=20),
    extension_count=ints,
    extension_total_ms=ints,
    traceparent=st.text(max_size=55),
    last_event_id=st.text(max_size=40),
    recent_keys=st.lists(st.integers(min_value=-(2**63), max_value=2**63 - 1), max_size=8).map(tuple),
    changed_by=st.tuples(ints, st.integers(0, 3), ints),
    updated_at_ms=ints,
    last_change=st.sampled_from(["registered", "extended", "completed", "cancelled"]),
    ended_at_ms=st.none() | ints,
)


@given(states)
def test_a_state_encodes_as_its_fields_in_order_and_decodes_to_itself(state: TimerState) -> None:
    raw = encode_state(state)
    assert raw == orjson.dumps(asdict(state))  # the format the changelog has always had
    assert decode_state(raw) == state
    assert stored_live(raw) == state.live


def test_an_expired_marker_round_trips() -> None:
    marker = Expired("expired", "a1", 7, 1_800_000_000_000, 1_800_600_000_000)
    assert decode_expired(encode_state(marker)) == marker
    assert not stored_live(encode_state(marker))


@given(states, states)
def test_states_with_the_same_policy_share_one_decoded_policy(a: TimerState, b: TimerState) -> None:
    # A worker caches 50,000 decoded states; a policy object each would be about 7 MB of copies.
    first, second = decode_state(encode_state(a)), decode_state(encode_state(replace(b, policy=a.policy)))
    assert first.policy is second.policy and first.policy == a.policy
