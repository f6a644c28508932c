"""`auction-timer demo` starts everything, serves live auctions, and stops cleanly."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from infra.ports import free_port
from tests.support.stack import ROOT
from tests.support.waiting import eventually_sync


def test_demo_runs_auctions_and_stops_without_orphans(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AUCTION_TIMER_")}
    env.update(
        AUCTION_TIMER_GATEWAY_PORT=str(port), AUCTION_TIMER_DATA_DIR=str(tmp_path), AUCTION_TIMER_TICK_INTERVAL_S="1"
    )
    demo = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "demo", "--duration", "30"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert demo.stdout is not None
    lines: list[str] = []
    url = None
    deadline = time.monotonic() + 120
    while url is None and time.monotonic() < deadline:
        line = demo.stdout.readline()
        if not line:
            break
        lines.append(line)
        if match := re.search(r"new auction \S+: (http://\S+)", line):
            url = match.group(1)
    assert url is not None, "".join(lines)
    assert lines[0].startswith(f"catalogue of running auctions: http://127.0.0.1:{port}/ "), lines[0]
    pids = [int(p) for p in re.findall(r"pid (\d+)", "".join(lines))]
    assert len(pids) == 2  # worker and gateway
    auction_id = url.rsplit("/", 1)[1]

    def timer() -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/auctions/{auction_id}/timer", timeout=2) as response:
            return dict(json.loads(response.read()))

    state = eventually_sync(timer, 30, "the demo auction's timer")
    assert state["status"] == "running" and state["remaining_ms"] > 0
    with urllib.request.urlopen(url, timeout=2) as page:
        assert b'role="timer"' in page.read()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as page:
        assert b"<caption>" in page.read()  # the catalogue

    def listed() -> bool:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/auctions", timeout=2) as response:
            return auction_id in [a["auction_id"] for a in json.loads(response.read())["auctions"]]

    eventually_sync(listed, 30, "the demo auction in the catalogue's listing")

    rest, _ = demo.communicate(timeout=120)
    assert demo.returncode == 0, "".join(lines) + rest
    assert "stopped." in rest
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived the demo"
