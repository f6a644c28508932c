"""Fan-out side by side: SIZES sockets on one auction, one ~400-byte tick a second, our gateway
next to two minimal reference servers, each in turn in the same run, measured by the same Go
load client (bench/loadclient: one process; its CPU per delivery is reported next to the servers').

Contenders (bench/peers builds and installs the outside ones itself):
- `node-ws`: Node `ws` broadcasting with `send` per socket (bench/peers/node/server.js);
- `python-websockets`: its `broadcast()` (bench/peers/websockets_server.py, a venv of its own);
- `gateway`: ours, one process, ticking the auction itself (the tick interval set to 1 s; the
  auction seeded in Redis as the worker would have projected it, no worker running);
- `gateway-kafka-ticks`: ours, the ticks coming through Kafka (stamped by this bench when it
  produces them, so their latency includes the broker), the gateway's own ticker quiet;
- `gateway-x2`: two gateway processes on one port (AUCTION_TIMER_GATEWAY_REUSE_PORT: the kernel
  spreads the sockets), each ticking its own.

Every contender starts fresh; its CPU with no socket is measured for IDLE_S; its sockets
connect (at most 200 handshakes in flight); SETTLE_S later a SECONDS window is measured:
delivery latency (receive time minus the tick's server time: same machine, same clock) and seq
gaps from the client; the server's CPU (user + system, all threads, from /proc/<pid>/stat) over
the window per delivery, also net of its idle CPU; the client's; and what else ran on the
machine meanwhile (all cores' busy time from /proc/stat minus server and client). For our
gateway also its event-loop lag p99 and its garbage-collection pauses (its histograms over the
window, bucket bounds), and its longest pause while the sockets connected.

`python -m bench.fanout` runs the sizes the issues ask for (the three contenders at 1,000 and
10,000 sockets, the two other ways of running ours at 10,000) and writes bench/results/fanout.json;
`--sizes/--seconds/--contenders/--extras` run another plan, whose figures are printed, not written;
`--profile` also samples our gateway over each window with py-spy (bench/profile.py) and adds
where its time went to the figures."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench import fanout_peers
from bench.common import cpu_ms, live_state, machine_busy_ms, seed, stack, write
from bench.load import SETTLE_S, Load
from bench.metrics_scrape import histogram_quantile, scrape
from bench.profile import Profile, summarize
from infra.ports import free_port
from infra.process import ServerProcess, wait_until
from streams import outputs
from streams.clock import wall_ms
from streams.fold import apply
from tests.support.events import envelope, started
from tests.support.stack import Stack

FULL = {
    "sizes": "1000,10000",
    "seconds": 20.0,
    "contenders": "node-ws,python-websockets,gateway",
    "extras": "gateway-kafka-ticks,gateway-x2",  # at the largest size only
}
AUCTION = "fan-1"
IDLE_S = 5.0  # each server's CPU with no socket, measured before they connect
SHARED = "the load client, and for ours Kafka and Redis; others_cores_busy is everything else"


@dataclass
class Running:
    processes: list[ServerProcess]
    url: str
    metrics: list[str] = field(default_factory=list)  # our gateways' /metrics URLs


def gateway_env(metrics_port: int, **extra: str) -> dict[str, str]:
    return {
        "AUCTION_TIMER_WS_MAX_PER_ADDRESS": "100000",  # every socket comes from 127.0.0.1
        "AUCTION_TIMER_GATEWAY_METRICS_PORT": str(metrics_port),
        **extra,
    }


def metrics_feed_up(url: str) -> bool:
    with contextlib.suppress(OSError):
        return scrape(url).get("auctions_gateway_feed_up") == 1.0
    return False


@contextlib.contextmanager
def running(contender: str, s: Stack) -> Iterator[Running]:
    if contender in ("node-ws", "python-websockets"):
        proc, url = fanout_peers.start_peer(contender, live_state(AUCTION), s.workdir)
        try:
            yield Running([proc], url)
        finally:
            proc.stop()
        return
    processes, metrics = [], []
    port = free_port()
    extra = {"AUCTION_TIMER_TICK_INTERVAL_S": "15"} if contender == "gateway-kafka-ticks" else {}
    if contender == "gateway-x2":
        extra["AUCTION_TIMER_GATEWAY_REUSE_PORT"] = "true"
    try:
        for i in range(2 if contender == "gateway-x2" else 1):
            metrics_port = free_port()
            env = gateway_env(metrics_port, AUCTION_TIMER_GATEWAY_PORT=str(port), **extra)
            proc = s.start(f"{contender}-{i}", ["gateway"], **env)
            processes.append(proc)
            metrics.append(f"http://127.0.0.1:{metrics_port}/metrics")
            wait_until(partial(metrics_feed_up, metrics[-1]), 60, f"{contender} {i}'s feed", alive=proc.running)
        yield Running(processes, f"ws://127.0.0.1:{port}", metrics)
    finally:
        for proc in processes:
            proc.stop()


def kafka_ticks(bootstrap: str, seconds: float) -> threading.Thread:
    """Produce a tick for AUCTION through Kafka once a second for `seconds`, stamped as sent."""

    async def produce() -> None:
        now = wall_ms()
        state, _ = apply(None, envelope(started(AUCTION, now, now + 3_600_000), time_ms=now))
        assert state is not None
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
        await producer.start()
        try:
            for n in range(1, int(seconds) + 1):
                rec = outputs.tick(state, n, wall_ms())
                await producer.send_and_wait(rec.topic, rec.value, key=rec.key)
                await asyncio.sleep(1.0)
        finally:
            await producer.stop()

    thread = threading.Thread(target=asyncio.run, args=(produce(),), daemon=True)
    thread.start()
    return thread


def gateway_figures(before: list[dict[str, float]], after: list[dict[str, float]]) -> dict[str, Any]:
    """Loop lag and GC pauses over the window (bucket bounds); with several processes, the worst."""
    lag, longest, gc_ms = 0.0, 0.0, 0.0
    for b, a in zip(before, after, strict=True):
        delta = {k: a[k] - b.get(k, 0.0) for k in a if k.startswith("auctions_gateway_")}
        lag = max(lag, histogram_quantile(delta, "auctions_gateway_loop_lag_ms", 0.99) or 0.0)
        for generation in "012":
            series = f'generation="{generation}",'
            longest = max(longest, histogram_quantile(delta, "auctions_gateway_gc_pause_ms", 1.0, series) or 0.0)
        gc_ms += sum(v for k, v in delta.items() if k.startswith("auctions_gateway_gc_pause_ms_sum"))
    return {
        "gateway_loop_lag_p99_ms_bucket": lag,
        "gateway_gc_ms": round(gc_ms, 1),
        "gateway_gc_max_ms_bucket": longest,
    }


def run_phase(
    contender: str, sockets: int, seconds: float, s: Stack, client: Path, profiled: bool = False
) -> dict[str, Any]:
    with running(contender, s) as server:
        pids = [p.pid for p in server.processes]
        idle = sum(cpu_ms(p) for p in pids)
        time.sleep(IDLE_S)
        idle_ms_per_s = (sum(cpu_ms(p) for p in pids) - idle) / IDLE_S
        before_connect = [scrape(url) for url in server.metrics]
        load = Load(client, server.url, "single", sockets, [AUCTION], seconds)
        connect = load.ready()
        time.sleep(SETTLE_S)
        scraped = [scrape(url) for url in server.metrics]
        server_cpu, busy, started_at = sum(cpu_ms(p) for p in pids), machine_busy_ms(), time.monotonic()
        load.go()
        name = f"{contender}-{sockets}"
        spies = [Profile(pid, s.workdir / f"{name}-{i}.txt") for i, pid in enumerate(pids)] if profiled else []
        ticks = kafka_ticks(s.kafka.bootstrap, seconds) if contender == "gateway-kafka-ticks" else None
        time.sleep(seconds)
        for spy in spies:
            spy.stop()
        server_cpu = sum(cpu_ms(p) for p in pids) - server_cpu
        busy, window = machine_busy_ms() - busy, time.monotonic() - started_at
        after = [scrape(url) for url in server.metrics]
        result = load.result()
        if ticks is not None:
            ticks.join()
    deliveries = result["deliveries"]
    figures = {
        "contender": contender,
        "sockets": sockets,
        "connected": connect["connected"],
        "connect_seconds": round(connect["connect_seconds"], 2),
        "connect_failures": result["connect_failures"],
        "first_connect_error": result.get("first_connect_error"),
        "deliveries": deliveries,
        "expected_deliveries": result["expected_deliveries"],
        "ticks": result["ticks_in_window"],
        "sequence_gaps": result["sequence_gaps"],
        "closed_early": result["closed_early"],
        "delivery_latency_ms": result["delivery_latency_ms"],
        "server_cpu_us_per_delivery": round(server_cpu * 1000 / max(1, deliveries), 1),
        # What it costs with no socket at all (its timers, probes, feed), per second, and so net of it.
        "server_idle_cpu_ms_per_s": round(idle_ms_per_s, 1),
        "server_cpu_us_per_delivery_net_of_idle": round(
            (server_cpu - idle_ms_per_s * window) * 1000 / max(1, deliveries), 1
        ),
        "client_cpu_us_per_delivery": round(result["client_cpu_ms"] * 1000 / max(1, deliveries), 1),
        "others_cores_busy": round((busy - server_cpu - result["client_cpu_ms"]) / (window * 1000), 2),
        "window_s": round(window, 2),
    }
    if spies:
        figures["gateway_profile"] = [summarize(spy.out, window, top=15) for spy in spies]
    if server.metrics:
        figures.update(gateway_figures(scraped, after))
        connecting = gateway_figures(before_connect, scraped)
        figures["gateway_gc_max_ms_bucket_connecting"] = connecting["gateway_gc_max_ms_bucket"]
    print(orjson.dumps(figures).decode(), flush=True)
    return figures


def main(
    sizes: list[int], seconds: float, contenders: list[str], extras: list[str], profiled: bool = False
) -> dict[str, Any]:
    client = fanout_peers.prepare()
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        assert s.redis is not None
        asyncio.run(seed(s.redis.url, s.key_prefix, [AUCTION]))
        plan = [(c, n) for n in sizes for c in contenders + (extras if n == max(sizes) else [])]
        phases = [run_phase(c, n, seconds, s, client, profiled and c.startswith("gateway")) for c, n in plan]
    return {"auction": AUCTION, "seconds": seconds, "tick_interval_s": 1, "cores_shared_with": SHARED, "phases": phases}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name, default in FULL.items():
        parser.add_argument(f"--{name}", type=type(default), default=default)
    parser.add_argument("--profile", action="store_true", help="sample our gateways over each window with py-spy")
    args = parser.parse_args()
    extras = [e for e in args.extras.split(",") if e]
    figures = main(
        [int(n) for n in args.sizes.split(",")], args.seconds, args.contenders.split(","), extras, args.profile
    )
    if (args.sizes, args.seconds, args.contenders, args.extras) == tuple(FULL.values()):
        write("fanout", figures)
    else:
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
