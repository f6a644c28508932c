"""A server process we started: its log file, a clean stop, and the log's tail for failures."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streams.errors import InfraError

_started: list[ServerProcess] = []


@atexit.register
def _stop_all() -> None:
    """Last resort when a test run or the demo dies half-way: no orphan servers."""
    for proc in _started:
        proc.kill()


@dataclass(eq=False)
class ServerProcess:
    """One child process writing stdout and stderr to `log_path`.

    Children run in their own session so a stop (or an orphan sweep) reaches the
    whole process group, and a test runner's Ctrl-C does not kill them half-way.
    """

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it until it exits
        try:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
            )
        finally:
            log.close()
        _started.append(self)

    @property
    def pid(self) -> int:
        if self.popen is None:
            raise InfraError(f"{self.name} was never started")
        return self.popen.pid

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the process group (kill -9 by default, as fault tests want); a SIGKILL
        returns once the process is gone."""
        if self.running():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            if sig == signal.SIGKILL and self.popen is not None:
                self.popen.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, wait up to `timeout`, then SIGKILL: never leaves an orphan."""
        if self.popen is None:
            return
        if self.running():
            self.kill(signal.SIGTERM)
            self.wait_stopped(timeout)
        else:
            # The leader may be gone while its group lives on.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.pid, signal.SIGKILL)

    def wait_stopped(self, timeout: float) -> None:
        """Wait for an exit already asked for; SIGKILL the group after `timeout`."""
        if self.popen is not None:
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
                self.popen.wait(timeout=10)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return f"({self.log_path} does not exist)"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, message: str) -> InfraError:
        return InfraError(f"{message}\n--- last lines of {self.log_path} ---\n{self.log_tail()}")


def kill_children() -> None:
    """SIGKILL every child of this process that is still running, with its process group (each
    ServerProcess leads its own): what a signal may leave when it lands half-way through a
    start, after the child was forked but before it was recorded."""
    me = os.getpid()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # pid (comm) state ppid ...: comm may hold spaces and parentheses, so split after the last ")"
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == me:
            pid = int(stat.parent.name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                if os.getpgid(pid) == pid:
                    os.killpg(pid, signal.SIGKILL)
                else:  # forked, not yet in its own session
                    os.kill(pid, signal.SIGKILL)


def gateway_feed_live(base_url: str) -> bool:
    """Does the gateway at `base_url` answer /readyz with its Kafka feed live? From then on it
    misses no tick (a gateway that only answers /healthz may still be fixing its offsets)."""
    try:
        with urllib.request.urlopen(f"{base_url}/readyz", timeout=1) as response:
            return json.loads(response.read()).get("kafka") is True
    except (OSError, ValueError):  # refused while starting, HTTPError for a 503, a partial body
        return False


def wait_until(
    condition: Callable[[], bool],
    timeout: float,
    what: str,
    interval: float = 0.1,
    alive: Callable[[], bool] | None = None,
) -> None:
    """Poll `condition` until true; raise naming `what` on timeout or when `alive` turns false."""
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return
        if alive is not None and not alive():
            raise InfraError(f"process died while waiting for {what}")
        if time.monotonic() > deadline:
            raise InfraError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
