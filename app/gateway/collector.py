"""How the gateway keeps garbage collection from stopping its fan-out (issue #14), and the
metrics that show it.

A collection stops the event loop, and with it every socket write. CPython's automatic full
(generation-2) collection walks every object the process holds: at 10,000 sockets about
800,000, which took 0.4-0.95 s, each time delaying every delivery of a tick. So the gateway
runs the full collection itself, over only what is new:

- at start-up it collects once and freezes what is there (modules, the app): no collection
  walks those again (`gc.freeze`);
- automatic collections keep to the young generations (the third threshold is never reached);
- every COLLECT_S it collects (finding cycles among what was made since its last run: half a
  second's worth of objects, of a burst of new sockets at most) and freezes what survived: the
  sockets' state, which lives as long as they do. A socket that closes is freed at once by
  reference counting, frozen or not: nothing of it is left in a cycle (the heartbeat is ours,
  app/gateway/heartbeat.py; the transport's own cycle is broken by closing.release);
- every COMPACT_S it unfreezes and collects everything once, so that a cycle among long-lived
  objects (none is known) cannot outlive an hour: that is the only full walk of every socket.

Every collection's pause is in auctions_gateway_gc_pause_ms, by generation."""

from __future__ import annotations

import asyncio
import gc
import time
from typing import Any

from app.gateway.metrics import GC_PAUSE

COLLECT_S = 0.5
COMPACT_S = 3600.0
NEVER = 2**30  # a third threshold no count of generation-1 collections reaches


class GcPauses:
    """Times every collection into GC_PAUSE (a gc callback)."""

    def __init__(self) -> None:
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            GC_PAUSE.labels(str(info["generation"])).observe((time.perf_counter() - self._started) * 1000)


class Collector:
    def __init__(self) -> None:
        self.pauses = GcPauses()
        self._thresholds = gc.get_threshold()

    def start(self) -> None:
        gc.callbacks.append(self.pauses)
        gc.collect()
        gc.freeze()
        young, middle, _ = self._thresholds
        gc.set_threshold(young, middle, NEVER)

    def stop(self) -> None:
        gc.set_threshold(*self._thresholds)
        gc.unfreeze()
        gc.callbacks.remove(self.pauses)

    async def run(self) -> None:
        compact_at = time.monotonic() + COMPACT_S
        while True:
            await asyncio.sleep(COLLECT_S)
            if time.monotonic() >= compact_at:
                gc.unfreeze()
                compact_at = time.monotonic() + COMPACT_S
            gc.collect()
            gc.freeze()
