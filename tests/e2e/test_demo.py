"""`auction-timer demo` starts everything quietly, serves live auctions, and stops everything it
started however it is stopped: Ctrl-C or SIGTERM, during start-up or while running, and signals
repeated while it is stopping."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from infra.ports import free_port
from tests.support.stack import ROOT
from tests.support.waiting import eventually_sync


@dataclass
class Demo:
    """The demo as a user runs it, its output collected line by line as it comes."""

    data_dir: Path
    port: int = field(default_factory=free_port)
    lines: list[str] = field(default_factory=list)
    popen: subprocess.Popen[str] | None = None

    def start(self) -> Demo:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUCTION_TIMER_")}
        env.update(
            AUCTION_TIMER_GATEWAY_PORT=str(self.port),
            AUCTION_TIMER_DATA_DIR=str(self.data_dir),
            AUCTION_TIMER_TICK_INTERVAL_S="1",
        )
        self.popen = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "demo"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )  # fmt: skip
        threading.Thread(target=self._read, daemon=True).start()
        return self

    def _read(self) -> None:
        assert self.popen is not None and self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float) -> re.Match[str]:
        found = eventually_sync(lambda: re.search(pattern, self.output), timeout, f"{pattern!r} in the output")
        assert found is not None
        return found

    def signal(self, sig: int) -> None:
        assert self.popen is not None
        self.popen.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.popen is not None
        return self.popen.wait(timeout=timeout)

    def stop(self) -> None:
        """However the test went: ask the demo to stop everything (SIGTERM), kill it if it hangs."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.popen.kill()

    def leftovers(self) -> list[str]:
        """Command lines of the processes still running in the demo's data directory, or with it
        in their command line or environment: its Kafka, Redis (which rewrites its command line
        and environment, but runs in its --dir), worker and gateway each match."""
        found = []
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                cmdline = (proc / "cmdline").read_bytes()
                here = (proc / "environ").read_bytes() + cmdline + os.readlink(proc / "cwd").encode()
            except OSError:
                continue  # gone meanwhile, or a zombie
            if str(self.data_dir).encode() in here:
                command = cmdline.replace(b"\0", b" ").decode(errors="replace")
                found.append(f"{proc.name}: {command}")
        return found


def test_demo_runs_auctions_and_stops_everything_despite_signals_while_stopping(tmp_path: Path) -> None:
    demo = Demo(tmp_path).start()
    try:
        url = demo.wait_for(r"new auction \S+: (http://\S+)", 240).group(1)
        assert demo.lines[0].startswith(f"catalogue of running auctions: http://127.0.0.1:{demo.port}/ "), demo.lines[0]
        # Start-up is quiet: a progress line per server, none of the brokers' refused connections.
        assert re.search(r"starting Kafka \(KRaft, one node\) \.\.\. ready in [\d.]+ s", demo.output)
        assert "Unable connect" not in demo.output and "ERROR" not in demo.output, demo.output
        pids = [int(p) for p in re.findall(r"pid (\d+)", demo.output)]
        assert len(pids) == 4, demo.output  # Kafka, Redis, worker, gateway
        auction_id = url.rsplit("/", 1)[1]

        def timer() -> dict:
            with urllib.request.urlopen(f"http://127.0.0.1:{demo.port}/auctions/{auction_id}/timer", timeout=5) as r:
                return dict(json.loads(r.read()))

        state = eventually_sync(timer, 60, "the demo auction's timer")
        assert state["status"] == "running" and state["remaining_ms"] > 0
        with urllib.request.urlopen(url, timeout=5) as page:
            assert b'role="timer"' in page.read()
        with urllib.request.urlopen(f"http://127.0.0.1:{demo.port}/", timeout=5) as page:
            assert b"<caption>" in page.read()  # the catalogue

        def listed() -> bool:
            with urllib.request.urlopen(f"http://127.0.0.1:{demo.port}/auctions", timeout=5) as response:
                return auction_id in [a["auction_id"] for a in json.loads(response.read())["auctions"]]

        eventually_sync(listed, 60, "the demo auction in the catalogue's listing")

        demo.signal(signal.SIGINT)
        demo.wait_for(r"stopping \.\.\.", 60)
        demo.signal(signal.SIGINT)  # impatient: Ctrl-C again, then a SIGTERM, while it stops
        demo.wait_for(r"SIGINT: already stopping", 60)
        demo.signal(signal.SIGTERM)
        assert demo.wait(120) == 0, demo.output
    finally:
        demo.stop()
    assert "SIGTERM: already stopping" in demo.output
    assert "stopped." in demo.output
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"process {pid} outlived the demo"
    assert demo.leftovers() == []


def test_a_signal_during_start_up_stops_what_was_already_started(tmp_path: Path) -> None:
    demo = Demo(tmp_path).start()
    try:
        demo.wait_for(r"starting Kafka", 60)
        # Kafka is booting (its JVM runs, the demo waits for it to answer): stop now, twice.
        eventually_sync(lambda: any("kafka.Kafka" in p for p in demo.leftovers()), 60, "Kafka's JVM")
        demo.signal(signal.SIGTERM)
        demo.wait_for(r"stopping \.\.\.", 60)
        demo.signal(signal.SIGTERM)
        assert demo.wait(120) == 130, demo.output
    finally:
        demo.stop()
    assert "SIGTERM during start-up" in demo.output
    assert "stopped." in demo.output
    assert demo.leftovers() == []
