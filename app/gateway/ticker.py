"""The gateway's own ticks: every auction someone watches here gets a `tick` at least every
tick interval, whether or not one came through Kafka.

The worker publishes a tick through Kafka on every change and periodically only for auctions
near their end, so most live auctions are silent on the feed. The gateway knows who watches
what: one loop wakes when the quietest channel has been quiet for the interval and publishes,
for each channel quiet that long, a tick built from the last state it holds (its LastSeen
memory, fed by the feed and the snapshot reads) with its own clock. Anything the channel
sends (a Kafka tick, a change, one of these) starts its interval again. Channels that fall
due within GROUP_S after the quietest are ticked in the same wake-up (that little early), so
the loop wakes at most interval / GROUP_S times an interval however many auctions are watched.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from app.gateway.hub import Hub
from app.gateway.last_seen import LastSeen
from app.gateway.metrics import GATEWAY_TICKS
from projections.store import FIELDS
from streams.state import LIVE

GROUP_S = 0.05


def tick_message(state: dict[str, Any], now_ms: int) -> dict[str, Any]:
    """A WebSocket `tick` (docs/asyncapi.yaml WsUpdate) from a remembered state and our clock.
    `seq` is the channel's, set by the hub."""
    message: dict[str, Any] = {"type": "tick"}
    message.update((name, state.get(name)) for name in FIELDS)
    live = state["status"] in LIVE
    message["remaining_ms"] = max(0, int(state["ends_at_ms"]) - now_ms) if live else 0
    message["server_time_ms"] = now_ms
    return message


class Ticker:
    def __init__(self, hub: Hub, memory: LastSeen, interval_s: float) -> None:
        self.hub = hub
        self.memory = memory
        self.interval_s = interval_s

    def tick_quiet(self, now: float) -> int:
        """Tick every channel due by `now` + GROUP_S (quiet for the interval, give or take that);
        returns how many were ticked.
        A channel with nothing to say (unknown auction, or ended: it had its last word) rests
        for another interval."""
        ticked = 0
        wall = self.hub.clock()
        with self.hub.batch():  # a socket following many of them: one write for the round
            for auction_id, channel in self.hub.quiet_since(now - self.interval_s + GROUP_S):
                state = self.memory.get(auction_id)
                if state is None or state["status"] not in LIVE:
                    self.hub.rest(auction_id, channel)
                    continue
                self.hub.publish(auction_id, tick_message(state, wall))
                ticked += 1
        GATEWAY_TICKS.inc(ticked)
        return ticked

    async def run(self) -> None:
        while True:
            now = time.monotonic()
            quietest = self.hub.next_quiet_at()
            due = now + self.interval_s if quietest is None else quietest + self.interval_s
            if due > now:
                # A channel that sends meanwhile only moves its own due later; a new one is due
                # an interval from now, after this wake-up. Either way waking now is not late.
                await asyncio.sleep(due - now)
                continue
            self.tick_quiet(now)
            # Let the socket writers flush one round before the next is queued.
            await asyncio.sleep(0)
