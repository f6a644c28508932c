"""Records and states held in memory cost about their length, not orjson's working buffer."""

from __future__ import annotations

import tracemalloc

from streams import events as ev
from streams.fold import apply
from streams.outputs import cloudevent
from streams.state import encode_state
from tests.support.events import POLICY, T0, envelope


def held_per_item(make: object) -> tuple[float, int]:
    assert callable(make)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make(i) for i in range(1_000)]
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    return held / len(kept), len(kept[0])


def test_an_output_record_and_an_encoded_state_hold_about_their_length() -> None:
    state, _ = apply(None, envelope(ev.AuctionStarted("a-1", T0, T0 + 60_000, POLICY, "m"), time_ms=T0))
    assert state is not None
    for make in (
        lambda i: cloudevent(f"id-{i}", "t", T0, "00-" + "1" * 32 + "-" + "2" * 16 + "-01", {"x": "y" * 300}),
        lambda i: encode_state(state),
    ):
        per_item, length = held_per_item(make)
        assert per_item < length + 200, (per_item, length)  # orjson's own bytes: 4,098 for 514
