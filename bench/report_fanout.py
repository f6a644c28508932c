"""The fan-out benchmarks in the README (issue #14's side by side, issue #16's catalogue): their
rows of the results table, ours next to the reference servers with the ratios."""

from __future__ import annotations

from typing import Any

from bench.report_worker import Load, ms, ratio


def shared(phase: dict[str, Any]) -> str:
    return f" (other processes kept {phase['others_cores_busy']:.2f} of the cores busy)"


def brief(phase: dict[str, Any]) -> str:
    lat = phase["delivery_latency_ms"]
    net = phase.get("server_cpu_us_per_delivery_net_of_idle")
    cpu = f"{phase['server_cpu_us_per_delivery']} µs/delivery" + (f" ({net} net of idle)" if net is not None else "")
    return f"p50 {ms(lat['p50'])}, p99 {ms(lat['p99'])}, {cpu}"


def delivered(*phases: dict[str, Any]) -> str:
    counts = ", ".join(f"{p['deliveries']:,}/{p['expected_deliveries']:,}" for p in phases)
    return f"delivered {counts}, {sum(p['sequence_gaps'] for p in phases)} gaps"


def side_by_side(size: int, at: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    ours, refs = at.get("gateway"), [at[n] for n in ("node-ws", "python-websockets") if n in at]
    if ours is None or not refs:
        return []
    best_p99 = min(r["delivery_latency_ms"]["p99"] for r in refs)
    best_cpu = min(r["server_cpu_us_per_delivery"] for r in refs)
    text = (f"ours {brief(ours)}, loop lag p99 ≤ {ms(ours['gateway_loop_lag_p99_ms_bucket'])}, longest GC pause ≤ "
            f"{ms(ours['gateway_gc_max_ms_bucket'])}{shared(ours)}; "
            + "; ".join(f"{r['contender']} {brief(r)}{shared(r)}" for r in refs)
            + f". Ours / the faster: p99 {ratio(ours['delivery_latency_ms']['p99'], best_p99)}, CPU "
            f"{ratio(ours['server_cpu_us_per_delivery'], best_cpu)}; {delivered(ours, *refs)}")  # fmt: skip
    return [(f"Fan-out, {size:,} sockets on one auction, one process each, same run",
             "ours ≤ the faster reference on p99 and CPU per delivery", text)]  # fmt: skip


def rows(load: Load) -> list[tuple[str, str, str]]:
    out: list[tuple[str, str, str]] = []
    phases = load("fanout").get("phases", [])
    for size in sorted({p["sockets"] for p in phases}):
        at = {p["contender"]: p for p in phases if p["sockets"] == size}
        out += side_by_side(size, at)
        if "gateway" not in at:
            continue
        one = ms(at["gateway"]["delivery_latency_ms"]["p99"])
        for name, what in (("gateway-kafka-ticks", "ours, ticks through Kafka"), ("gateway-x2", "two of ours")):
            if name in at:
                p = at[name]
                text = f"{brief(p)} (one process, its own ticks: p99 {one}); {delivered(p)}{shared(p)}"
                out.append((f"Fan-out, {size:,} sockets, {what}", "report; moonshot p99 ≤ 100 ms per machine", text))
    for phase in load("catalogue").get("phases", []):
        lat = phase["delivery_latency_ms"]
        what = (f"{phase['auctions_per_connection']:,} auctions each over /updates" if phase["mode"] == "mux"
                else "one auction each")  # fmt: skip
        out.append((f"Catalogue fan-out, one gateway, {phase['connections']:,} sockets, {what}", "report (issue #16)",
                    f"p50 {ms(lat['p50'])}, p99 {ms(lat['p99'])}; loop lag p99 ≤ "
                    f"{ms(phase['gateway_loop_lag_p99_ms_bucket'])}; gateway CPU "
                    f"{phase['gateway_cpu_ms_per_1000_deliveries']} ms per 1,000 deliveries; {delivered(phase)}"
                    f"{shared(phase)}"))  # fmt: skip
    return out
