"""Shared pieces of the benchmarks: servers on free ports, percentiles, result files."""

from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis

from infra.kafka_server import KafkaCluster
from infra.redis_server import RedisServer
from projections.keys import Keys
from projections.store import Projected, ProjectionStore
from streams.clock import wall_ms
from streams.fold import apply
from tests.support.events import envelope, started
from tests.support.stack import Stack

RESULTS = Path(__file__).resolve().parent / "results"
CLOCK_TICK_MS = 1_000 / os.sysconf("SC_CLK_TCK")  # the unit of /proc/<pid>/stat's CPU times


def cpu_ms(pid: int) -> float:
    """CPU time (user + system, every thread) process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * CLOCK_TICK_MS  # utime, stime


def machine_busy_ms() -> float:
    """CPU time every process on the machine has used (all cores), from /proc/stat: measured
    around a window, minus what the processes under test used, it is what shared the cores."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) * CLOCK_TICK_MS


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def summary(values: Sequence[float]) -> dict[str, float]:
    return {
        "count": len(values),
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else float("nan"),
    }


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "load_average_1m_at_end": os.getloadavg()[0],
    }


def write(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"benchmark": name, "machine": machine(), **figures}, indent=2) + "\n")
    print(json.dumps(figures, indent=2))
    return path


def report(name: str, figures: dict[str, Any], full: bool) -> None:
    """A full-size run's figures go to bench/results/<name>.json (and are printed); a smaller
    run's are only printed."""
    if full:
        write(name, figures)
    else:
        print(json.dumps(figures, indent=2))


def live_state(auction_id: str) -> dict[str, Any]:
    """The public state of an auction started now that ends in an hour (what ticks carry)."""
    now = wall_ms()
    state, _ = apply(None, envelope(started(auction_id, now, now + 3_600_000), time_ms=now))
    assert state is not None
    return state.public()


async def seed(redis_url: str, prefix: str, ids: list[str]) -> None:
    """Project live auctions into Redis, as the worker would have: the gateway reads them for its
    snapshots and ticks them itself."""
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        states = [Projected.of(live_state(auction_id)) for auction_id in ids]
        await ProjectionStore(client, Keys(prefix), 3600).write(states, "newer", wall_ms())
    finally:
        await client.aclose()


@contextlib.contextmanager
def stack(**overrides: str) -> Iterator[Stack]:
    """Kafka and Redis on free ports, and a Stack to start the service's processes in. Its
    directory is removed afterwards (a full-size scale run leaves 7.5 GB of logs and tables), unless
    BENCH_KEEP_WORKDIR is set."""
    work = Path(tempfile.mkdtemp(prefix="auction-bench-"))
    kafka = KafkaCluster(work / "kafka")
    redis = RedisServer(work / "redis")
    kafka.start()
    redis.start()
    s = Stack(kafka, redis, work, f"bench:{uuid.uuid4().hex[:6]}:", overrides=dict(overrides))
    try:
        yield s
    finally:
        s.stop_all()
        redis.stop()
        kafka.stop()
        if not os.environ.get("BENCH_KEEP_WORKDIR"):
            shutil.rmtree(work, ignore_errors=True)
