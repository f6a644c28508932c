"""`make bench`: run the benchmarks in their own processes, then rewrite the README's results table
(between the bench markers) from bench/results/*.json. The full-size state benchmark (about 21
minutes alone) runs only when named: `make bench-scale`, which is `python -m bench.run_all scale`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench import report_fanout, report_worker
from bench.report_worker import ms

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
BENCHES = ("clients", "timers", "ticks", "ingest", "storm", "fanout", "catalogue", "recovery")
START, END = "<!-- bench:start -->", "<!-- bench:end -->"


def load(name: str) -> dict[str, Any]:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def rows() -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    clients, recovery = load("clients"), load("recovery")
    out += report_worker.rows(load)
    out += report_fanout.rows(load)
    if clients:
        err = clients["countdown_error_ms"]
        out.append(("Client countdown error vs truth (clock ±10 min, 0-200 ms jitter)", "p99 ≤ 50 ms",
                    f"p50 {ms(err['p50'])}, p99 {ms(err['p99'])} over {clients['runs']} simulated runs; "
                    f"{clients['false_drift_warnings']} false warnings; a countdown reading the device clock: "
                    f"p99 {ms(clients['device_clock_countdown_error_ms']['p99'])}"))  # fmt: skip
    if recovery:
        kill, fo = recovery["worker_kill_9"], recovery["redis_primary_loss"]
        out.append(("Worker kill -9 → overdue timers fire", "≤ 10 s after restart",
                    f"first {ms(kill['first_overdue_completion_after_restart_ms'])}, all "
                    f"{ms(kill['all_overdue_completed_after_restart_ms'])}; lost {kill['lost_completions']}, "
                    f"double {kill['double_completions']}"))  # fmt: skip
        out.append(("Redis primary loss → projection whole", "≤ 5 s after failover",
                    f"{ms(fo['projection_whole_after_promotion_ms'])} after promotion "
                    f"({fo['auctions']:,} auctions; promotion took {ms(fo['promotion_after_kill_ms'])})"))  # fmt: skip
    out += state_rows(load("storm"), load("scale"))
    return out


def state_rows(storm: dict[str, Any], scale: dict[str, Any]) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    if storm:
        lat = storm["completion_lateness_ms"]
        out.append((f"Last-second bids during a storm ({storm['storm_bids_per_s']:,} bids/s)", "100% extend",
                    f"{storm['last_second_bids_in_time_extended']}/{storm['last_second_bids_in_time']} acknowledged "
                    f"before the deadline extended; completion lateness p50 {ms(lat['p50'])}, p99 {ms(lat['p99'])}, "
                    f"max {ms(lat['max'])}; watermark lag p99 {ms(storm['watermark_lag_p99_ms'])}"))  # fmt: skip
    if scale:
        loaded, ready = scale["while_loaded"], scale["restart_to_ready_s"]
        out.append((f"One worker, {scale['live_auctions']:,} live + {scale['ended_auctions']:,} ended auctions",
                    "RSS ≤ 1.5 GiB; ready ≤ 15 s after kill -9; standby ≤ 5 s",
                    f"RSS {scale['worker_rss_mib']:,} MiB loaded, peak {scale['worker_peak_rss_while_loading_mib']:,} "
                    f"MiB while loading ({scale['rss_bytes_per_auction']} B/auction; "
                    f"RocksDB {scale['rocksdb_bytes_per_auction']} B/auction on disk); ready after kill -9 "
                    f"{ready['rocksdb']} s (memory store {ready['memory']} s); "
                    f"standby takeover {scale['standby_takeover_s']} s"))  # fmt: skip
        lat = loaded["completion_lateness_ms"]
        out.append(("Lateness and bids while loaded", "p99 ≤ 50 ms at ≥ 3,000 bids/s",
                    f"p99 {ms(lat['p99'])}, max {ms(lat['max'])} at {loaded['bids_folded_per_s']:,} bids/s "
                    f"(from {scale['projection_caught_up_after_load_s']} s after the load, when the "
                    f"projection had written it to Redis); {loaded['tick_records_per_s']} tick records/s through "
                    "Kafka"))  # fmt: skip
    return out


def table() -> str:
    measured = load("timers").get("machine") or load("clients").get("machine") or {}
    lines = [
        f"Measured by `make bench` on this project's CI-class machine ({measured.get('cpus', '?')} cores, "
        f"Python {measured.get('python', '?')}, {measured.get('measured_at', '?')}), the state at scale by "
        f"`make bench-scale` ({load('scale').get('machine', {}).get('measured_at', 'not run')}); raw figures in "
        "`bench/results/`.",
        "",
        "| target | goal | measured |",
        "|---|---|---|",
        *(f"| {a} | {b} | {c} |" for a, b, c in rows()),
        *(f"\n{section}" for section in report_worker.sections(load)),
    ]
    return "\n".join(lines)


def update_readme() -> None:
    readme = ROOT / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    readme.write_text(f"{head}{START}\n{table()}\n{END}{tail}")


def main() -> int:
    failed = []
    for name in sys.argv[1:] or BENCHES:
        print(f"== bench {name}", flush=True)
        if subprocess.run([sys.executable, "-m", f"bench.{name}"], cwd=ROOT).returncode != 0:
            failed.append(name)
    update_readme()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
