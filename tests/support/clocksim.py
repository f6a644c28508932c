"""A simulated client and server for the countdown algorithm: a true server clock, a client
monotonic clock running `drift_ppm` fast, a device wall clock skewed by `skew_ms` (which the
algorithm never reads), and one-way latencies jittered uniformly in [0, max_latency_ms]."""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from app.client.countdown import Countdown, DriftWarning, ServerClock, Sync

SERVER_START = 1_800_000_000_000.0


@dataclass(order=True)
class SimEvent:
    at: float
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


@dataclass
class SimResult:
    errors: list[float]
    warnings: int
    syncs: int


def simulate(
    seed: int,
    skew_ms: float = 0.0,
    max_latency_ms: float = 200.0,
    drift_ppm: float = 30.0,
    ping_every_ms: float = 2_000,
    tick_every_ms: float = 1_000,
    duration_ms: float = 70_000,
) -> SimResult:
    rng = random.Random(seed)
    ends_at = SERVER_START + duration_ms + 600_000
    mono_origin = rng.uniform(0, 1e7)
    device_wall_clock = SERVER_START + skew_ms  # a naive client would read this; Countdown never does
    assert device_wall_clock - SERVER_START == skew_ms

    def mono(true_t: float) -> float:
        return mono_origin + true_t * (1 + drift_ppm * 1e-6)

    now = {"t": 0.0}
    cd = Countdown(ServerClock(lambda: mono(now["t"])))
    events: list[SimEvent] = [SimEvent(0.0, "ping"), SimEvent(rng.uniform(0, tick_every_ms), "tick")]
    for i in range(int((duration_ms - 5_000) / 137)):
        events.append(SimEvent(5_000 + i * 137.0 + rng.uniform(0, 100), "probe"))
    heapq.heapify(events)
    errors: list[float] = []
    warnings = syncs = seq = 0

    def latency() -> float:
        return rng.uniform(0, max_latency_ms)

    while events:
        event = heapq.heappop(events)
        now["t"] = event.at
        if event.kind == "ping":
            served_at = event.at + latency()
            heapq.heappush(events, SimEvent(served_at + latency(), "pong", (mono(event.at), SERVER_START + served_at)))
            if event.at < duration_ms:
                heapq.heappush(events, SimEvent(event.at + ping_every_ms, "ping"))
        elif event.kind == "pong":
            cd.clock.sample(event.data[0], event.data[1], mono(event.at))
            if cd.state is None:
                cd.apply_state({"auction_id": "sim", "version": 1, "status": "running", "ends_at_ms": int(ends_at)})
        elif event.kind == "tick":
            seq += 1
            message = {"type": "tick", "seq": seq, "server_time_ms": SERVER_START + event.at, "auction_id": "sim",
                       "version": 1, "status": "running", "ends_at_ms": int(ends_at)}  # fmt: skip
            heapq.heappush(events, SimEvent(event.at + latency(), "deliver", message))
            if event.at < duration_ms:
                heapq.heappush(events, SimEvent(event.at + tick_every_ms, "tick"))
        elif event.kind == "deliver" and cd.clock.offset is not None:
            for out in cd.on_message(event.data, mono(event.at)):
                warnings += isinstance(out, DriftWarning)
                syncs += isinstance(out, Sync)
        elif event.kind == "probe":
            shown = cd.remaining_ms()
            assert shown is not None
            errors.append(abs(shown - (ends_at - (SERVER_START + event.at))))
    return SimResult(errors, warnings, syncs)
