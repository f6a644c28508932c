"""Catalogue fan-out from one gateway process: CONNECTIONS sockets each following the same AUCTIONS
auctions over /updates (CONNECTIONS x AUCTIONS deliveries a tick round), and, in the same run
against the same gateway, as many single-auction sockets.

The auctions are seeded in Redis and no worker runs: every tick is the gateway's own (one a
second, the tick interval), built from the state it read and stamped with its clock. The Go load
client (bench/loadclient, one process) records each tick's latency (receive time minus server
time) and seq gaps over a window that starts SETTLE_S after the last snapshot. Reported per
phase: delivery latency p50/p99, the gateway's loop lag p99 (its histogram, bucket bound), its
CPU time (user + system, from /proc) per 1,000 deliveries over the window, the client's, and
what else used the cores meanwhile.

`python -m bench.catalogue` runs the size the issue asks for (1,000 connections x 100 auctions) and
writes bench/results/catalogue.json; `--connections/--auctions/--seconds` run a smaller one, whose
figures are printed and not written."""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any

import orjson

from bench import fanout_peers
from bench.common import cpu_ms, machine_busy_ms, seed, stack, write
from bench.load import SETTLE_S, Load
from bench.metrics_scrape import histogram_quantile, scrape

FULL = {"connections": 1_000, "auctions": 100, "seconds": 20.0}


def run_phase(
    client: Path, base: str, pid: int, mode: str, connections: int, ids: list[str], seconds: float
) -> dict[str, Any]:
    load = Load(client, base.replace("http", "ws", 1), mode, connections, ids, seconds)
    connect = load.ready()
    time.sleep(SETTLE_S)
    before, cpu_before, busy = scrape(f"{base}/metrics"), cpu_ms(pid), machine_busy_ms()
    load.go()
    time.sleep(seconds)
    after, cpu, busy = scrape(f"{base}/metrics"), cpu_ms(pid) - cpu_before, machine_busy_ms() - busy
    result = load.result()
    delta = {k: after[k] - before.get(k, 0.0) for k in after if k.startswith("auctions_gateway_")}
    deliveries = result["deliveries"]
    per_round = connections * (len(ids) if mode == "mux" else 1)
    return {
        "mode": mode,
        "connections": connections,
        "connected": connect["connected"],
        "connect_seconds": round(connect["connect_seconds"], 2),
        "connect_failures": result["connect_failures"],
        "first_connect_error": result.get("first_connect_error"),
        "auctions_per_connection": len(ids) if mode == "mux" else 1,
        "deliveries_per_tick_round": per_round,
        "deliveries": deliveries,
        "expected_deliveries": result["expected_deliveries"],
        "sequence_gaps": result["sequence_gaps"],
        "closed_early": result["closed_early"],
        "delivery_latency_ms": result["delivery_latency_ms"],
        "gateway_loop_lag_p99_ms_bucket": histogram_quantile(delta, "auctions_gateway_loop_lag_ms", 0.99),
        "gateway_cpu_ms_per_1000_deliveries": round(cpu / max(1, deliveries) * 1000, 2),
        "client_cpu_ms_per_1000_deliveries": round(result["client_cpu_ms"] / max(1, deliveries) * 1000, 2),
        "others_cores_busy": round((busy - cpu - result["client_cpu_ms"]) / (seconds * 1000), 2),
        "slow_consumer_closes": delta.get("auctions_gateway_slow_consumer_closes_total", 0.0),
    }


def main(connections: int, auctions: int, seconds: float) -> dict[str, Any]:
    ids = [f"cat-{i:03d}" for i in range(auctions)]
    client = fanout_peers.loadclient()
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        gateway, base = s.start_gateway(AUCTION_TIMER_WS_MAX_PER_ADDRESS=str(connections + 100))
        assert s.redis is not None
        asyncio.run(seed(s.redis.url, s.key_prefix, ids))
        phases = [run_phase(client, base, gateway.pid, mode, connections, ids, seconds) for mode in ("mux", "single")]
    return {
        "tick_interval_s": 1,
        "seconds": seconds,
        "cores_shared_with": "the load client, Kafka and Redis; others_cores_busy is everything else",
        "phases": phases,
    }


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
