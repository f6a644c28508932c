"""WebSocket heartbeats for every socket from one loop: a socket the gateway has heard nothing from
for AUCTION_TIMER_WS_HEARTBEAT_S gets a PING, and one that has still sent nothing (a PONG is
enough) half that later is reset (TCP RST: a peer that does not answer will not read a close
frame either).

aiohttp's own heartbeat does the same with a task per ping and two timers per socket, and ties
each socket's protocol and response in a reference cycle. At 10,000 sockets that churn
triggered full garbage collections of 0.4-0.95 s, each delaying every delivery of a tick
(issue #14). Here a sweep once a second costs a few attribute reads per socket and allocates
nothing for a socket that is not due."""

from __future__ import annotations

import asyncio
import time

from app.gateway.closing import reset
from app.gateway.hub import Hub
from app.gateway.metrics import HEARTBEAT_RESETS

PING_FRAME = b"\x89\x00"  # FIN + PING, unmasked, no payload (RFC 6455 5.5.2)
SWEEP_S = 1.0


class Heartbeat:
    def __init__(self, hub: Hub, interval_s: float) -> None:
        self.hub = hub
        self.interval_s = interval_s

    def sweep(self, now: float) -> None:
        """Ping the sockets silent for the interval; reset those that left a ping unanswered for
        half of it. (Resetting only schedules the close: the set is not changed meanwhile.)"""
        patience, interval = self.interval_s / 2, self.interval_s
        for conn in self.hub.connections:
            pinged = conn.pinged_at
            if pinged is not None and conn.heard_at < pinged:
                if now - pinged >= patience and not conn.closing:
                    HEARTBEAT_RESETS.inc()
                    reset(conn.transport)
            elif now - conn.heard_at >= interval and not conn.closing:
                conn.transport.write(PING_FRAME)
                conn.pinged_at = now

    async def run(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_S)
            self.sweep(time.monotonic())
