"""Running the Go load client (bench/loadclient) against one server: open the sockets, wait
until every one has its snapshots, measure a window, collect its JSON figures."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

SETTLE_S = 2.0  # from the last socket's snapshot to the window: what the connect burst set off is over


class Load:
    def __init__(
        self, binary: Path, url: str, mode: str, sockets: int, auctions: list[str], seconds: float, drain: float = 5.0
    ) -> None:
        self.seconds = seconds
        self.drain = drain
        argv = [str(binary), f"-url={url}", f"-mode={mode}", f"-sockets={sockets}", f"-auctions={','.join(auctions)}"]
        argv += [f"-seconds={seconds}", f"-drain={drain}"]
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ready(self, timeout: float = 600) -> dict[str, Any]:
        """Block until every socket is open with its snapshots (or has failed); the connect figures."""
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("ready "):
            self.proc.kill()
            raise RuntimeError(f"the load client did not get ready: {line!r}")
        figures: dict[str, Any] = json.loads(line.removeprefix("ready "))
        return figures

    def go(self) -> None:
        """Start the measuring window."""
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> dict[str, Any]:
        out, _ = self.proc.communicate(timeout=self.seconds + self.drain + 120)
        figures: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return figures
