"""Client countdown error vs the truth, on simulated clocks and networks (the algorithm the
Python client and the page share): device wall clocks off by up to ±10 min (really injected:
tests/support/clocksim.py), monotonic clocks running 30 ppm fast, one-way latencies jittered
0-200 ms, over many seeds. The same runs with a countdown that reads the device clock show
what the skew would do to a client that trusted it."""

from __future__ import annotations

from bench.common import summary, write
from tests.support.clocksim import WallClockServerClock, simulate

SEEDS = 200
SKEWS_MS = (-600_000, -90_000, 0, 45_000, 600_000)


def main() -> dict[str, object]:
    errors: list[float] = []
    control: list[float] = []
    warnings = syncs = 0
    for seed in range(SEEDS):
        skew = SKEWS_MS[seed % len(SKEWS_MS)]
        result = simulate(seed, skew_ms=skew, duration_ms=120_000)
        errors += result.errors
        warnings += result.warnings
        syncs += result.syncs
        control += simulate(seed, skew_ms=skew, duration_ms=120_000, server_clock=WallClockServerClock).errors
    return {
        "runs": SEEDS,
        "jitter_ms": "0-200 one way",
        "device_clock_skews_ms": list(SKEWS_MS),
        "countdown_error_ms": summary(errors),
        "false_drift_warnings": warnings,
        "false_syncs": syncs,
        "device_clock_countdown_error_ms": summary(control),
    }


if __name__ == "__main__":
    write("clients", main())
