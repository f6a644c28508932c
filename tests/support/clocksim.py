"""A simulated client and server for the countdown algorithm: a true server clock, a client
monotonic clock running `drift_ppm` fast, a device wall clock off by `skew_ms`, and one-way
latencies jittered uniformly in [0, max_latency_ms].

The skew is real: while the simulation runs, every way Python code reads the wall clock
(time.time, time.time_ns, time.clock_gettime(CLOCK_REALTIME), datetime.now, ...) answers
the simulated true time plus `skew_ms`, so a countdown that consulted the device clock would
be off by the skew (WallClockServerClock below is such a clock: the tests and the bench
show it failing)."""

from __future__ import annotations

import contextlib
import datetime as dt
import heapq
import random
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from unittest import mock

from app.client.countdown import Countdown, DriftWarning, ServerClock, Sync

SERVER_START = 1_800_000_000_000.0


@dataclass(order=True)
class SimEvent:
    at: float
    kind: str = field(compare=False)
    data: Any = field(compare=False, default=None)


@contextlib.contextmanager
def device_wall_clock(read_ms: Callable[[], float]) -> Iterator[None]:
    """While inside, the wall clock reads `read_ms()` (epoch milliseconds) everywhere Python code
    can ask for it: the `time` and `datetime` modules, and the client modules that bound the
    originals under their own names."""
    real_clock_gettime, real_clock_gettime_ns = time.clock_gettime, time.clock_gettime_ns
    real_localtime, real_gmtime, real_ctime = time.localtime, time.gmtime, time.ctime

    def seconds() -> float:
        return read_ms() / 1000

    def nanoseconds() -> int:
        return round(read_ms() * 1_000_000)

    def clock_gettime(clock: int) -> float:
        return seconds() if clock == time.CLOCK_REALTIME else real_clock_gettime(clock)

    def clock_gettime_ns(clock: int) -> int:
        return nanoseconds() if clock == time.CLOCK_REALTIME else real_clock_gettime_ns(clock)

    class SkewedDateTime(dt.datetime):
        @classmethod
        def now(cls, tz: dt.tzinfo | None = None) -> SkewedDateTime:
            return cls.fromtimestamp(seconds(), tz)

        @classmethod
        def utcnow(cls) -> SkewedDateTime:
            return cls.fromtimestamp(seconds(), dt.UTC).replace(tzinfo=None)

        @classmethod
        def today(cls) -> SkewedDateTime:
            return cls.fromtimestamp(seconds())

    class SkewedDate(dt.date):
        @classmethod
        def today(cls) -> SkewedDate:
            return cls.fromtimestamp(seconds())

    fakes: dict[object, object] = {
        time.time: seconds,
        time.time_ns: nanoseconds,
        real_clock_gettime: clock_gettime,
        real_clock_gettime_ns: clock_gettime_ns,
        real_localtime: lambda secs=None: real_localtime(seconds() if secs is None else secs),
        real_gmtime: lambda secs=None: real_gmtime(seconds() if secs is None else secs),
        real_ctime: lambda secs=None: real_ctime(seconds() if secs is None else secs),
        dt.datetime: SkewedDateTime,
        dt.date: SkewedDate,
    }
    with contextlib.ExitStack() as patches:
        modules = [time, dt, *(m for name, m in sys.modules.items() if name.startswith("app.client") and m)]
        for module in modules:
            for name, value in list(vars(module).items()):
                with contextlib.suppress(TypeError):  # unhashable module attributes are no clocks
                    if value in fakes:
                        patches.enter_context(mock.patch.object(module, name, fakes[value]))
        yield


class WallClockServerClock(ServerClock):
    """The control the simulation must catch: a countdown clock that trusts the device's clock."""

    def server_now(self) -> float | None:
        return None if self.offset is None else time.time() * 1000


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
    server_clock: Callable[[Callable[[], float]], ServerClock] = ServerClock,
) -> SimResult:
    """Run a countdown whose `server_clock` is built on the simulated monotonic clock, while the
    device's wall clock reads the true server time plus `skew_ms`."""
    now = {"t": 0.0}
    with device_wall_clock(lambda: SERVER_START + now["t"] + skew_ms):
        rng = random.Random(seed)
        ends_at = SERVER_START + duration_ms + 600_000
        mono_origin = rng.uniform(0, 1e7)

        def mono(true_t: float) -> float:
            return mono_origin + true_t * (1 + drift_ppm * 1e-6)

        cd = Countdown(server_clock(lambda: mono(now["t"])))
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
                heapq.heappush(
                    events, SimEvent(served_at + latency(), "pong", (mono(event.at), SERVER_START + served_at))
                )
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
