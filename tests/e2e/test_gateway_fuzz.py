"""Schema-driven fuzzing of the live gateway: zero 5xx, every response as docs/openapi.yaml says."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from streams import events as ev
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce
from tests.support.stack import ROOT, Stack

pytestmark = pytest.mark.slow  # a load test: schemathesis against the live gateway


async def test_schemathesis_finds_no_server_errors_and_no_contract_breaks(stack: Stack, tmp_path: Path) -> None:
    stack.start_worker()
    _, base = stack.start_gateway(AUCTION_TIMER_SYNC_RATE_PER_MIN="100000")
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        # A few real auctions, so generated ids sometimes hit one (the schema's example ids do).
        for auction_id in ("a", "0", "fuzz-1"):
            await produce(producer, record(ev.AuctionStarted(auction_id, now_ms(), now_ms() + 600_000,
                                                             ev.Policy(1_000, 1_000, 10_000), "m")))  # fmt: skip
    report = tmp_path / "schemathesis.txt"
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(Path(sys.executable).with_name("st")), "run", str(ROOT / "docs" / "openapi.yaml"),
            "--url", base, "--checks", "all", "--max-examples", "60", "--generation-deterministic",
            "--request-timeout", "10", "--continue-on-failure",
        ],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )  # fmt: skip
    report.write_text(result.stdout + result.stderr)
    print(result.stdout[-3000:])
    assert result.returncode == 0, result.stdout[-6000:]
