"""Fan-out from one gateway process: 1,000 and then 10,000 subscribers of one auction.

Ticks go into Kafka once a second (stamped with the current time); subscribers in two
separate client processes record when each arrives. Delivery latency is therefore
Kafka + gateway + socket + the client's own parsing, end to end, with the clients, the
gateway and Kafka sharing this machine's cores. The gateway's own view (tick server time
to its last socket write) and its loop lag come from its histograms."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from bench.common import stack, summary, write
from bench.metrics_scrape import histogram_quantile, scrape
from streams import outputs
from streams.clock import wall_ms
from streams.fold import apply
from tests.support.events import envelope, started

CLIENT_PROCESSES = 2
SECONDS = 20


async def tick_for(bootstrap: str, auction_id: str, seconds: float) -> int:
    state, _ = apply(None, envelope(started(auction_id, wall_ms(), wall_ms() + 3_600_000), time_ms=wall_ms()))
    assert state is not None
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    sent = 0
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            rec = outputs.tick(state, sent + 1, wall_ms())
            await producer.send_and_wait(rec.topic, rec.value, key=rec.key)
            sent += 1
            await asyncio.sleep(1.0)  # the tick rate under test
    finally:
        await producer.stop()
    return sent


def run_phase(base: str, bootstrap: str, subscribers: int) -> dict[str, Any]:
    auction_id = f"fan-{subscribers}"
    per_process = str(subscribers // CLIENT_PROCESSES)
    command = [sys.executable, "-m", "bench.fanout_client", base, auction_id, per_process, str(SECONDS + 5)]
    clients = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(CLIENT_PROCESSES)]
    for client in clients:
        assert client.stdout is not None and client.stdout.readline().strip() == "ready"
    before = scrape(f"{base}/metrics")
    ticks = asyncio.run(tick_for(bootstrap, auction_id, SECONDS))
    latencies: list[float] = []
    gaps = 0
    for client in clients:
        out, _ = client.communicate(timeout=120)
        result = orjson.loads(out.strip().splitlines()[-1])
        latencies += result["latencies"]
        gaps += result["gaps"]
    after = scrape(f"{base}/metrics")
    delta = {k: after[k] - before.get(k, 0.0) for k in after if k.startswith("auctions_gateway_")}
    return {
        "subscribers": subscribers,
        "ticks_sent": ticks,
        "deliveries": len(latencies),
        "expected_deliveries": ticks * subscribers,
        "sequence_gaps": gaps,
        "delivery_latency_ms": summary(latencies),
        # Tick server time to the last socket write, measured by the gateway (bucket bound).
        "gateway_fanout_p99_ms_bucket": histogram_quantile(delta, "auctions_gateway_fanout_latency_ms", 0.99),
        "gateway_loop_lag_p99_ms_bucket": histogram_quantile(delta, "auctions_gateway_loop_lag_ms", 0.99),
    }


def main() -> dict[str, Any]:
    with stack(AUCTION_TIMER_LOG_LEVEL="WARNING") as s:
        # The Kafka ticks (one a second) keep every channel busy; with a 15 s interval the gateway's
        # own ticks (for quiet channels) never add to them, so each tick sent is one per subscriber.
        _, base = s.start_gateway(
            AUCTION_TIMER_WS_MAX_PER_ADDRESS="20000",
            AUCTION_TIMER_WS_SEND_QUEUE="256",
            AUCTION_TIMER_TICK_INTERVAL_S="15",
        )
        phases = [run_phase(base, s.kafka.bootstrap, n) for n in (1_000, 10_000)]
    return {"client_processes": CLIENT_PROCESSES, "phases": phases}


if __name__ == "__main__":
    write("fanout", main())
