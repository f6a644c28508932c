"""Which stored entries the retention sweeper asks to remove, read off their bytes."""

from __future__ import annotations

from dataclasses import replace

from streams.retention import due_for_removal
from streams.state import Expired, encode_state, expired_key
from tests.support.events import T0
from tests.support.gateway import timer

DAY = 86_400_000


def test_only_ended_timers_and_markers_past_the_retention_are_due() -> None:
    live = timer("live")
    ended = replace(timer("ended"), status="ended", version=2, ended_at_ms=T0)
    cancelled = replace(timer("cancelled"), status="cancelled", version=3, ended_at_ms=T0 + DAY)
    marker = Expired("expired", "gone", 4, T0 - DAY, T0)
    items = [
        (b"live", encode_state(live)),
        (b"ended", encode_state(ended)),
        (b"cancelled", encode_state(cancelled)),
        (expired_key(b"gone"), encode_state(marker)),
    ]
    assert list(due_for_removal(items, T0 + 7 * DAY - 1, 7 * DAY)) == []
    assert list(due_for_removal(items, T0 + 7 * DAY, 7 * DAY)) == [("ended", 2), ("gone", 4)]
    assert list(due_for_removal(items, T0 + 8 * DAY, 7 * DAY)) == [("ended", 2), ("cancelled", 3), ("gone", 4)]
