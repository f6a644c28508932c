"""The gateway's own memory of every auction's latest state, fed by the ticks and events it
fans out. It answers when Redis cannot, and keeps versions from going backwards."""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from streams.state import LIVE

MAX_AUCTIONS = 200_000


@dataclass
class LastSeen:
    ended_ttl_s: int
    states: OrderedDict[str, dict[str, Any]] = field(default_factory=OrderedDict)

    def update(self, state: dict[str, Any]) -> bool:
        """Keep `state` if it is at least as new as what we hold; True when it was kept.
        Fields only timer events carry (kind, cause, previous_ends_at_ms) are kept when a tick of
        the same version follows."""
        auction_id = state["auction_id"]
        current = self.states.get(auction_id)
        if current is not None and current["version"] > state["version"]:
            return False
        self.states[auction_id] = {**current, **state} if current is not None else dict(state)
        self.states.move_to_end(auction_id)
        while len(self.states) > MAX_AUCTIONS:
            self.states.popitem(last=False)
        return True

    def get(self, auction_id: str) -> dict[str, Any] | None:
        return self.states.get(auction_id)

    def prune(self, now_ms: int | None = None) -> int:
        """Forget ended auctions once Redis would have forgotten them too."""
        now_ms = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        horizon = now_ms - self.ended_ttl_s * 1000
        gone = [a for a, s in self.states.items() if s["status"] not in LIVE and (s.get("ended_at_ms") or 0) < horizon]
        for auction_id in gone:
            del self.states[auction_id]
        return len(gone)
