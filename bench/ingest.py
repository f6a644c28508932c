"""Ingest, side by side: our worker and three peers fold the same pre-loaded input, one at a time,
in one run, on one Kafka broker (8 partitions; the input is bench/ingest_input.py's).

Contenders, each its own process and consumer group, reading the input from its start:
- `ours`: `auction-timer worker` as an operator starts it (Faust agents, the engine, ticks, the
  Redis projection and the reconciler in the process), the settings' defaults;
- `plain`: bench/peers/ingest_plain.py, a plain aiokafka loop over the same TimerProcessor;
- `quix`: bench/peers/ingest_quix.py, Quix Streams running the same processor on its State;
- `faust-empty`: bench/peers/ingest_faust_empty.py, an empty Faust agent (the framework's floor).

Each is timed from the moment its consumer group has formed (from then on it may fetch; what
it does before its first output, it does for the input) to the moment its group has committed
the end of every input partition and every owed output record is in the broker; its start-up
before the group formed, and the wait for its first output, are reported apart. Owed is what replaying our
processor over the input in the log's order yields (tests/support/ledger.py); after each run its
outputs are read back and compared with that ledger, record by record, and its changelog's last
value per auction with the replay's final table. CPU is read from /proc: the contender's process
and the Kafka JVM, over the same window; what else ran on the machine then is reported too. Our
worker is profiled with py-spy during its run.

`python -m bench.ingest` runs the full size (200,000 bids, every contender) and writes
bench/results/ingest.json; `--bids N`, `--contenders a,b` run a smaller one, printed, not written."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.common import stack, write
from bench.ingest_input import PARTITIONS, create_topics, produce
from bench.ingest_watch import Watch, Window, input_ends
from bench.profile import Profile, summarize
from bench.venvs import quix_python
from infra.process import ServerProcess
from streams import topics
from streams.state import encode_state
from tests.support.ledger import OWED_TOPICS, Replayed, changelog, compare, published, replay
from tests.support.stack import APP_ID, ROOT, Stack

FULL_BIDS = 200_000
PEERS = ROOT / "bench" / "peers"
CORES = os.cpu_count() or 1


@dataclass
class Contender:
    name: str
    group: str
    prefix: str | None  # its output topics' names are prefix + the contract's; None: it has none
    start: Callable[[Stack, Path], ServerProcess]
    changelog_key: Callable[[bytes], bytes] = bytes


def peer(name: str, python: Callable[[], Path], script: str, *args: str) -> Callable[[Stack, Path], ServerProcess]:
    def start(s: Stack, work: Path) -> ServerProcess:
        argv = [str(python()), str(PEERS / script), s.kafka.bootstrap, *(a.format(work=work) for a in args)]
        proc = ServerProcess(name, argv, work / f"{name}.log", cwd=ROOT)
        proc.start()
        return proc

    return start


def ours(s: Stack, work: Path) -> ServerProcess:
    # The settings' defaults where the test stack sets shorter ones.
    return s.start_worker(AUCTION_TIMER_TICK_INTERVAL_S="5", AUCTION_TIMER_RECONCILE_INTERVAL_S="10")


def this_python() -> Path:
    return Path(sys.executable)


CONTENDERS = {
    "ours": Contender("ours", APP_ID, "", ours),
    "plain": Contender("plain", "peer-plain", "peer-plain.",
                       peer("peer-plain", this_python, "ingest_plain.py", "peer-plain", "peer-plain.")),
    "quix": Contender("quix", "peer-quix", "peer-quix.",
                      peer("peer-quix", quix_python, "ingest_quix.py", "peer-quix", "peer-quix.", "{work}/quix-state"),
                      changelog_key=lambda key: key.rsplit(b"|", 1)[0]),
    "faust-empty": Contender("faust-empty", "peer-faust-empty", None,
                             peer("peer-faust-empty", this_python, "ingest_faust_empty.py", "peer-faust-empty",
                                  "{work}/faust-empty")),
}  # fmt: skip


async def create_outputs(bootstrap: str, prefix: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = [prefix + t for t in OWED_TOPICS]
        await admin.create_topics(
            [NewTopic(n, PARTITIONS, 1) for n in names]
            + [NewTopic(prefix + "changelog", PARTITIONS, 1, topic_configs=topics.CHANGELOG_CONFIG)]
        )
    finally:
        await admin.close()


async def changelog_of(bootstrap: str, c: Contender) -> str | None:
    if c.name == "ours":
        return topics.changelog_topic(APP_ID)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        names = sorted(await admin.list_topics())
    finally:
        await admin.close()
    # Quix names its store's changelog after the group: changelog__<group>--<stream>--<store>.
    return next((n for n in names if n == f"{c.prefix}changelog" or n.startswith(f"changelog__{c.group}--")), None)


async def verify(bootstrap: str, c: Contender, replayed: Replayed) -> dict[str, Any]:
    if c.prefix is None:
        return {}
    problems = compare(replayed.owed, await published(bootstrap, c.prefix))
    name = await changelog_of(bootstrap, c)
    count, last = await changelog(bootstrap, name, c.changelog_key) if name else (0, {})
    matching = sum(last.get(key) == encode_state(state) for key, state in replayed.states.items())
    return {
        "owed_records": len(replayed.owed),
        "records_not_as_owed": len(problems),
        "first_problems": problems[:5],
        "changelog_records": count,
        "auctions_whose_last_changelog_value_is_the_replayed_state": f"{matching}/{len(replayed.states)}",
    }


def figures(bids: int, launched: float, w: Window) -> dict[str, Any]:
    seconds = w.ended.at - w.started.at
    cpu = w.ended.cpu_ms - w.started.cpu_ms
    broker = w.ended.broker_cpu_ms - w.started.broker_cpu_ms
    others = w.ended.machine_busy_ms - w.started.machine_busy_ms - cpu - broker
    return {
        "bids_per_s": round(bids / seconds),
        "seconds": round(seconds, 2),
        "seconds_until_committed": round(w.committed_at - w.started.at, 2),
        "launch_to_group_formed_s": round(w.started.at - launched, 2),
        "group_formed_to_first_output_or_commit_s": round(w.first_output_at - w.started.at, 2),
        "worker_cpu_us_per_bid": round(cpu * 1000 / bids, 1),
        "broker_cpu_us_per_bid": round(broker * 1000 / bids, 1),
        "worker_cores_busy": round(cpu / (seconds * 1000), 2),
        "others_cores_busy": round(others / (seconds * 1000), 2),
        "outputs_counted_during_run": w.outputs,
    }


def run_one(s: Stack, c: Contender, bids: int, replayed: Replayed, profile: set[str], work: Path) -> dict[str, Any]:
    bootstrap = s.kafka.bootstrap
    broker = s.kafka.nodes[0].process
    assert broker is not None
    if c.prefix:
        asyncio.run(create_outputs(bootstrap, c.prefix))
    outputs = [(c.prefix or "") + t for t in OWED_TOPICS] if c.prefix is not None else []
    # Ticks are not owed (they depend on the clock); counted to show what they cost.
    extra = [topics.TICKS] if c.name == "ours" else []
    ends = asyncio.run(input_ends(bootstrap, topics.INPUT_TOPICS))
    owed = len(replayed.owed) if c.prefix is not None else 0
    profiler: list[Profile] = []
    launched: list[tuple[float, ServerProcess]] = []

    async def watch() -> Window:
        # The outputs are counted from before the launch: a contender that starts fast writes
        # some before a count begun after its launch would look.
        async with Watch(bootstrap, c.group, ends, outputs, extra) as w:
            launched.append((time.monotonic(), c.start(s, work)))
            proc = launched[0][1]

            def on_start() -> None:
                if c.name in profile:
                    profiler.append(Profile(proc.pid, work / f"{c.name}.pyspy.txt"))

            return await w.run(proc.pid, broker.pid, owed, proc.running, on_start)

    try:
        window = asyncio.run(watch())
    finally:
        for p in profiler:
            p.stop()
        for _, proc in launched:
            proc.stop()
    launched_at = launched[0][0]
    result = {"contender": c.name, **figures(bids, launched_at, window), **asyncio.run(verify(bootstrap, c, replayed))}
    if profiler:
        result["profile"] = summarize(profiler[0].out, window.ended.at - window.started.at)
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode(), flush=True)
    return result


def ratios(by_name: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """ours / peer for each figure: above 1 is faster for bids/s, costlier for CPU."""
    mine = by_name.get("ours")
    if mine is None:
        return {}
    keys = ("bids_per_s", "worker_cpu_us_per_bid", "broker_cpu_us_per_bid")
    return {
        name: {k: round(mine[k] / r[k], 2) for k in keys if r.get(k)} for name, r in by_name.items() if name != "ours"
    }


def targets(by_name: dict[str, dict[str, Any]]) -> dict[str, bool]:
    mine, out = by_name.get("ours"), {}
    if mine is None:
        return {}
    if "faust-empty" in by_name:
        out["at least 70% of the empty Faust agent's rate"] = (
            mine["bids_per_s"] >= 0.7 * by_name["faust-empty"]["bids_per_s"]
        )
    out["at least 10,000 bids/s"] = mine["bids_per_s"] >= 10_000
    if "quix" in by_name:
        out["at least 1.3x Quix Streams"] = mine["bids_per_s"] >= 1.3 * by_name["quix"]["bids_per_s"]
    out["worker CPU at most 100 us/bid"] = mine["worker_cpu_us_per_bid"] <= 100
    out["broker CPU at most 20 us/bid"] = mine["broker_cpu_us_per_bid"] <= 20
    return out  # fmt: skip


def main(bids: int, names: list[str], profile: set[str]) -> dict[str, Any]:
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        work = s.workdir
        t0 = time.monotonic()
        asyncio.run(create_topics(s.kafka.bootstrap, APP_ID))
        asyncio.run(produce(s.kafka.bootstrap, bids))
        print(f"produced {bids:,} bids and their registrations in {time.monotonic() - t0:.1f} s", flush=True)
        replayed = asyncio.run(replay(s.kafka.bootstrap))
        print(f"replayed: {len(replayed.owed):,} owed records, {len(replayed.states):,} auctions", flush=True)
        results = [run_one(s, CONTENDERS[name], bids, replayed, profile, work) for name in names]
    by_name = {r["contender"]: r for r in results}
    return {
        "input": {"bids": bids, "registrations": len(replayed.states), "partitions": PARTITIONS,
                  "extending_share": 0.05, "owed_records": len(replayed.owed), "brokers": 1},
        "contenders": results,
        "ours_over_peer": ratios(by_name),
        "targets_met": targets(by_name),
    }  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bids", type=int, default=FULL_BIDS)
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--profile", default="ours", help="contenders to profile with py-spy (comma separated)")
    args = parser.parse_args()
    chosen = args.contenders.split(",")
    result = main(args.bids, chosen, set(args.profile.split(",")) - {""})
    if args.bids == FULL_BIDS and chosen == list(CONTENDERS):
        write("ingest", result)
    else:
        print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
