"""Catalogue fan-out from one gateway process: CONNECTIONS sockets each following the same AUCTIONS
auctions over /updates (CONNECTIONS x AUCTIONS deliveries a tick round), and, in the same run
against the same gateway, as many single-auction sockets.

The auctions are seeded in Redis and no worker runs: every tick is the gateway's own (one a
second, the tick interval), built from the state it read and stamped with its clock. Clients in
CLIENT_PROCESSES processes record each tick's latency (receive time minus server time).
Reported per phase: delivery latency p50/p99, the gateway's loop lag p99 (its histogram, bucket
bound), and its CPU time (user + system, from /proc) per 1,000 deliveries.

`python -m bench.catalogue` runs the size the issue asks for (1,000 connections x 100 auctions) and
writes bench/results/catalogue.json; `--connections/--auctions/--seconds` run a smaller one, whose
figures are printed and not written."""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import redis.asyncio as aioredis

from bench.common import stack, write
from bench.metrics_scrape import histogram_quantile, scrape
from projections.keys import Keys
from projections.store import Projected, ProjectionStore
from streams.clock import wall_ms
from streams.fold import apply
from tests.support.events import envelope, started

FULL = {"connections": 1_000, "auctions": 100, "seconds": 20.0}
CLIENT_PROCESSES = 4
TICKS = 1_000 / os.sysconf("SC_CLK_TCK")  # ms per clock tick of /proc/<pid>/stat


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICKS  # utime + stime


async def seed(redis_url: str, prefix: str, ids: list[str]) -> None:
    now = wall_ms()
    states = []
    for auction_id in ids:
        state, _ = apply(None, envelope(started(auction_id, now, now + 3_600_000), time_ms=now))
        assert state is not None
        states.append(Projected.of(state.public()))
    client = aioredis.Redis.from_url(redis_url, decode_responses=True)
    try:
        await ProjectionStore(client, Keys(prefix), 3600).write(states, "newer", now)
    finally:
        await client.aclose()


def percentile(histogram: dict[int, int], q: float) -> float:
    total, seen = sum(histogram.values()), 0
    for value in sorted(histogram):
        seen += histogram[value]
        if seen >= q * total:
            return float(value)
    return float("nan")


def run_phase(base: str, pid: int, mode: str, connections: int, ids: list[str], seconds: float) -> dict[str, Any]:
    share, extra = divmod(connections, CLIENT_PROCESSES)
    counts = [share + (i < extra) for i in range(CLIENT_PROCESSES)]
    command = [sys.executable, "-m", "bench.catalogue_client", base, mode]
    clients = [
        subprocess.Popen(
            [*command, str(n), str(seconds), ",".join(ids)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        for n in counts
        if n
    ]
    for client in clients:
        assert client.stdout is not None and client.stdout.readline().strip() == "ready"
    before, cpu_before = scrape(f"{base}/metrics"), cpu_ms(pid)
    for client in clients:
        assert client.stdin is not None
        client.stdin.write("go\n")
        client.stdin.flush()
    histogram: dict[int, int] = {}
    gaps = 0
    for client in clients:
        out, _ = client.communicate(timeout=seconds + 120)
        result = orjson.loads(out.strip().splitlines()[-1])
        for value, count in result["histogram"].items():
            histogram[int(value)] = histogram.get(int(value), 0) + count
        gaps += result["gaps"]
    after, cpu_after = scrape(f"{base}/metrics"), cpu_ms(pid)
    delta = {k: after[k] - before.get(k, 0.0) for k in after if k.startswith("auctions_gateway_")}
    deliveries = sum(histogram.values())
    per_round = connections * (len(ids) if mode == "mux" else 1)
    return {
        "mode": mode,
        "connections": connections,
        "auctions_per_connection": len(ids) if mode == "mux" else 1,
        "deliveries_per_tick_round": per_round,
        "deliveries": deliveries,
        "expected_deliveries_about": int(per_round * seconds),
        "sequence_gaps": gaps,
        "delivery_latency_ms": {
            "p50": percentile(histogram, 0.5),
            "p99": percentile(histogram, 0.99),
            "max": float(max(histogram, default=0)),
        },
        "gateway_loop_lag_p99_ms_bucket": histogram_quantile(delta, "auctions_gateway_loop_lag_ms", 0.99),
        "gateway_cpu_ms_per_1000_deliveries": round((cpu_after - cpu_before) / max(1, deliveries) * 1000, 2),
        "slow_consumer_closes": delta.get("auctions_gateway_slow_consumer_closes_total", 0.0),
    }


def main(connections: int, auctions: int, seconds: float) -> dict[str, Any]:
    ids = [f"cat-{i:03d}" for i in range(auctions)]
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        gateway, base = s.start_gateway(
            AUCTION_TIMER_WS_MAX_PER_ADDRESS=str(connections + 100), AUCTION_TIMER_WS_SEND_QUEUE="256"
        )
        assert s.redis is not None
        asyncio.run(seed(s.redis.url, s.key_prefix, ids))
        phases = [run_phase(base, gateway.pid, mode, connections, ids, seconds) for mode in ("mux", "single")]
    return {"client_processes": CLIENT_PROCESSES, "tick_interval_s": 1, "seconds": seconds, "phases": phases}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in FULL.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    args = parser.parse_args()
    figures = main(args.connections, args.auctions, args.seconds)
    if (args.connections, args.auctions, args.seconds) == tuple(FULL.values()):
        write("catalogue", figures)
    else:
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
