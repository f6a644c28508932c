"""The worker's benchmarks in the README (ingest, completion lateness, ticks): their rows of the
results table and their side-by-side tables, ours next to each peer with the ratio."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Load = Callable[[str], dict[str, Any]]


def ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.0f} ms" if value >= 10 else f"{value:.1f} ms"


def ratio(ours: float, peer: float) -> str:
    return f"{ours / peer:.2f}x" if peer else "n/a"


def shared(figures: dict[str, Any]) -> str:
    return f"other processes kept {figures['others_cores_busy']:.2f} of the cores busy"


def rows(load: Load) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    ingest, timers, ticks = load("ingest"), load("timers"), load("ticks")
    if ingest:
        by = {c["contender"]: c for c in ingest["contenders"]}
        ours, floor, quix = by["ours"], by["faust-empty"], by["quix"]
        size = f"{ingest['input']['bids']:,} pre-loaded bids, 5% extending, 8 partitions, 1 broker"
        out.append((f"Ingest, one worker process ({size}; table below)",
                    "≥ 70% of an empty Faust agent, ≥ 10,000 bids/s, ≥ 1.3x Quix Streams",
                    f"{ours['bids_per_s']:,}/s: {ours['bids_per_s'] / floor['bids_per_s']:.0%} of the empty agent, "
                    f"{ratio(ours['bids_per_s'], quix['bids_per_s'])} Quix; {shared(ours)}"))  # fmt: skip
        cpu = f"worker {ours['worker_cpu_us_per_bid']} µs, broker {ours['broker_cpu_us_per_bid']} µs"
        out.append(("Ingest CPU per bid", "worker ≤ 100 µs, broker ≤ 20 µs", cpu))
    if timers:
        lat, cmd = timers["completion_lateness_ms"], timers["command_lateness_ms"]
        load_text = (
            f"ending over {timers['spread_over_s']} s, one worker folding {timers['bids_folded_per_s']:,} bids/s"
        )
        out.append((f"Completion lateness, {timers['auctions']:,} live auctions {load_text}",
                    "p99 ≤ 25 ms, max ≤ 250 ms; lost 0, doubled 0",
                    f"completion in Kafka: p50 {ms(lat['p50'])}, p99 {ms(lat['p99'])}, max {ms(lat['max'])} "
                    f"(its command: p99 {ms(cmd['p99'])}); lost {timers['lost_completions']}, "
                    f"doubled {timers['double_completions']}; {shared(timers)}"))  # fmt: skip
    if ticks:
        mine, plain, delay = ticks["ours"], ticks["plain"], ticks["ours"]["tick_delay_ms"]
        out.append((f"Periodic ticks through Kafka, {ticks['auctions']:,} auctions in the horizon, every "
                    f"{ticks['tick_interval_s']} s (table below)", "their cost must not dominate",
                    f"{mine['ticks_per_s']:,} ticks/s; worker {mine['worker_cpu_us_per_tick_net_of_idle']} µs, broker "
                    f"{mine['broker_cpu_us_per_tick_net_of_idle']} µs a tick net of idle "
                    f"({ratio(mine['worker_cpu_us_per_tick_net_of_idle'], plain['worker_cpu_us_per_tick'])} a plain "
                    f"loop's CPU); delay p99 {ms(delay['p99'])}; {shared(mine)}"))  # fmt: skip
    return out


def sections(load: Load) -> list[str]:
    out = []
    ingest, ticks = load("ingest"), load("ticks")
    if ingest:
        by = {c["contender"]: c for c in ingest["contenders"]}
        ours = by["ours"]
        lines = [
            f"**Ingest side by side** ({ingest['input']['bids']:,} bids and {ingest['input']['registrations']:,} "
            "registrations pre-loaded once; each contender in turn reads them from the start in its own group; "
            "timed from its group forming to its committed end, outputs all in; `bench/ingest.py`):",
            "",
            "| contender | bids/s | ours ÷ it | worker CPU µs/bid | ours ÷ it | broker CPU µs/bid | ours ÷ it "
            "| owed records as owed | changelog ends as replayed | other load (cores) |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for c in ingest["contenders"]:

            def versus(key: str, c: dict[str, Any] = c) -> str:
                return "" if c is ours else ratio(ours[key], c[key])

            owed = (f"{c['owed_records'] - c['records_not_as_owed']:,}/{c['owed_records']:,}"
                    if "owed_records" in c else "none (counted by commits)")  # fmt: skip
            lines.append(
                f"| {c['contender']} | {c['bids_per_s']:,} | {versus('bids_per_s')} "
                f"| {c['worker_cpu_us_per_bid']} | {versus('worker_cpu_us_per_bid')} "
                f"| {c['broker_cpu_us_per_bid']} | {versus('broker_cpu_us_per_bid')} "
                f"| {owed} | {c.get('auctions_whose_last_changelog_value_is_the_replayed_state', '')} "
                f"| {c['others_cores_busy']:.2f} |"
            )
        out.append("\n".join(lines))
    if ticks:
        lines = [
            f"**Ticks side by side** ({ticks['auctions']:,} live auctions, one tick each every "
            f"{ticks['tick_interval_s']} s, over {ticks['window_s']} s; `bench/ticks.py`):",
            "",
            "| sender | ticks/s | worker CPU µs/tick | net of idle | broker CPU µs/tick | net of idle | delay p99 |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("ours", "plain"):
            t = ticks[name]
            lines.append(
                f"| {name} | {t['ticks_per_s']:,} | {t['worker_cpu_us_per_tick']} "
                f"| {t.get('worker_cpu_us_per_tick_net_of_idle', t['worker_cpu_us_per_tick'])} "
                f"| {t['broker_cpu_us_per_tick']} | {t['broker_cpu_us_per_tick_net_of_idle']} "
                f"| {ms(t['tick_delay_ms']['p99'])} |"
            )
        out.append("\n".join(lines))
    return out
