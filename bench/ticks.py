"""The cost of periodic ticks: AUCTIONS live auctions, all within AUCTION_TIMER_KAFKA_TICK_HORIZON_S
of their end, tick through Kafka every TICK_S; measured over WINDOW_S once the worker has folded
their registrations and ticked each once.

Three phases, one Kafka broker, one after another:
- `idle`: our worker with the horizon at 0 (no auction ticks through Kafka): what the worker and
  the broker spend without ticks (Faust's timers, the reconciler, the projection consumer);
- `ours`: our worker with every auction inside the horizon;
- `plain`: bench/peers/ticks_plain.py, the same ticks from a plain loop (the floor).
CPU per tick is the process's (and the Kafka JVM's) CPU over the window divided by the ticks the
window put in the broker; for ours also net of the idle phase's rate. Tick delay is read from the
records: each auction's ticks against the phase of its least late tick in the window.

`python -m bench.ticks` runs the full size and writes bench/results/ticks.json; `--auctions N`
runs a smaller one, printed, not written."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections import defaultdict
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import cpu_ms, machine_busy_ms, stack, summary, write
from bench.ingest_watch import Watch, input_ends, until
from bench.timers import register
from infra.process import ServerProcess
from streams import events as ev
from streams import topics
from streams.clock import wall_ms
from streams.log_range import read_range
from streams.topic_admin import TopicPlan, ensure_topics
from tests.support.stack import ROOT, Stack

FULL_AUCTIONS = 10_000
TICK_S, WINDOW_S = 5, 20
POLICY = ev.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=10_000)
PEER_TOPIC = "peer-ticks." + topics.TICKS


async def registrations(bootstrap: str, auctions: int) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        await register(producer, {f"tick-{i}": wall_ms() + 3_600_000 for i in range(auctions)}, POLICY)
    finally:
        await producer.stop()


async def window(
    bootstrap: str, proc: ServerProcess, broker_pid: int, topic: str, group: str | None, auctions: int
) -> dict:
    """Ready (the group folded every registration, or the peer ticked them all once), then WINDOW_S."""
    ends = await input_ends(bootstrap, (topics.AUCTION_STARTED,))
    async with Watch(bootstrap, group or "", ends, [], [topic]) as w:
        if group:
            await until(w.committed_to_end, 300, "the registrations to be folded", proc.running)
        else:
            await until(lambda: first_round(w, auctions), 300, "a first round of ticks", proc.running)
        await asyncio.sleep(TICK_S + 1)  # every auction's periodic ticks have begun
        base, cpu0, broker0, t0 = await w.gained(), cpu_ms(proc.pid), cpu_ms(broker_pid), time.monotonic()
        busy0 = machine_busy_ms()
        start_offsets = await w.produced()
        await asyncio.sleep(WINDOW_S)  # the measured window
        after, cpu1, broker1, t1 = await w.gained(), cpu_ms(proc.pid), cpu_ms(broker_pid), time.monotonic()
        busy1 = machine_busy_ms()
        end_offsets = await w.produced()
    ticks = after[topic] - base[topic]
    return {
        "seconds": round(t1 - t0, 2),
        "ticks": ticks,
        "ticks_per_s": round(ticks / (t1 - t0)),
        "cpu_ms": cpu1 - cpu0,
        "broker_cpu_ms": broker1 - broker0,
        "others_cores_busy": round((busy1 - busy0 - (cpu1 - cpu0) - (broker1 - broker0)) / ((t1 - t0) * 1000), 2),
        "tick_delay_ms": await tick_delays(bootstrap, start_offsets, end_offsets),
    }


async def first_round(w: Watch, auctions: int) -> bool:
    return sum((await w.gained()).values()) >= auctions


async def tick_delays(bootstrap: str, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]) -> dict:
    if all(ends[tp] <= start for tp, start in starts.items()):
        return summary([])
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    series: dict[str, list[int]] = defaultdict(list)
    try:
        consumer.assign(list(starts))
        async for _, records in read_range(consumer, starts, ends):
            for r in records:
                data = orjson.loads(r.value)["data"]
                series[data["auction_id"]].append(data["server_time_ms"])
    finally:
        await consumer.stop()
    # Each auction's phase is that of its least late tick: a late first tick does not shift the rest.
    interval = TICK_S * 1000
    delays = []
    for times in series.values():
        shifted = [t - k * interval for k, t in enumerate(times)]
        delays += [t - min(shifted) for t in shifted]
    return summary(delays)


def per_tick(phase: dict[str, Any], idle: dict[str, Any], own_idle: bool) -> dict[str, Any]:
    """CPU per tick over the window, raw and net of the idle phase's rate: the broker's for every
    sender (it serves the idle worker's polling too, so this errs against the peer), the
    process's own only for our worker (the peer does nothing else)."""
    ticks, scale = max(1, phase["ticks"]), phase["seconds"] / idle["seconds"]
    out = {
        "worker_cpu_us_per_tick": round(phase["cpu_ms"] * 1000 / ticks, 1),
        "broker_cpu_us_per_tick": round(phase["broker_cpu_ms"] * 1000 / ticks, 1),
        "broker_cpu_us_per_tick_net_of_idle": round(
            (phase["broker_cpu_ms"] - idle["broker_cpu_ms"] * scale) * 1000 / ticks, 1
        ),
    }
    if own_idle:
        out["worker_cpu_us_per_tick_net_of_idle"] = round((phase["cpu_ms"] - idle["cpu_ms"] * scale) * 1000 / ticks, 1)
    return out


def run_worker(s: Stack, name: str, horizon_s: int, auctions: int) -> dict[str, Any]:
    worker = s.start_worker(
        name, AUCTION_TIMER_APP_ID=name, AUCTION_TIMER_KAFKA_TICK_HORIZON_S=str(horizon_s),
        AUCTION_TIMER_TICK_INTERVAL_S=str(TICK_S), AUCTION_TIMER_RECONCILE_INTERVAL_S="10",
    )  # fmt: skip
    broker = s.kafka.nodes[0].process
    assert broker is not None
    try:
        return asyncio.run(window(s.kafka.bootstrap, worker, broker.pid, topics.TICKS, name, auctions))
    finally:
        worker.stop()


def run_peer(s: Stack, auctions: int) -> dict[str, Any]:
    argv = [
        sys.executable,
        str(ROOT / "bench" / "peers" / "ticks_plain.py"),
        s.kafka.bootstrap,
        PEER_TOPIC,
        str(TICK_S),
    ]
    peer = ServerProcess("peer-ticks", argv, s.workdir / "peer-ticks.log", cwd=ROOT)
    peer.start()
    broker = s.kafka.nodes[0].process
    assert broker is not None
    try:
        return asyncio.run(window(s.kafka.bootstrap, peer, broker.pid, PEER_TOPIC, None, auctions))
    finally:
        peer.stop()


def main(auctions: int) -> dict[str, Any]:
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        bootstrap = s.kafka.bootstrap
        asyncio.run(ensure_topics(TopicPlan(bootstrap, 8, 1, "ticks-idle")))
        asyncio.run(create_peer_topic(bootstrap))
        asyncio.run(registrations(bootstrap, auctions))
        idle = run_worker(s, "ticks-idle", 0, auctions)
        ours = run_worker(s, "ticks-ours", 7_200, auctions)
        plain = run_peer(s, auctions)
    ours_cost, plain_cost = per_tick(ours, idle, True), per_tick(plain, idle, False)
    return {
        "auctions": auctions,
        "tick_interval_s": TICK_S,
        "window_s": WINDOW_S,
        "idle": idle,
        "ours": {**ours, **ours_cost},
        "plain": {**plain, **plain_cost},
        "ours_over_plain": {
            **{k: round(ours_cost[k] / v, 2) for k, v in plain_cost.items() if v > 0},
            # The plain loop does nothing but tick: its whole CPU against what ticks add to ours.
            "worker_cpu_net_of_idle_over_plain": round(
                ours_cost["worker_cpu_us_per_tick_net_of_idle"] / max(0.1, plain_cost["worker_cpu_us_per_tick"]), 2
            ),
        },
    }


async def create_peer_topic(bootstrap: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(PEER_TOPIC, 8, 1)])
    finally:
        await admin.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--auctions", type=int, default=FULL_AUCTIONS)
    args = parser.parse_args()
    figures = main(args.auctions)
    if args.auctions == FULL_AUCTIONS:
        write("ticks", figures)
    else:
        print(orjson.dumps(figures, option=orjson.OPT_INDENT_2).decode())
