"""Sampling a running Python process with py-spy (from PyPI, in a venv the bench makes) and
summing its stacks: where the samples' time went, by function (self and inclusive)."""

from __future__ import annotations

import signal
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any

from bench.venvs import py_spy

RATE_HZ = 100


class Profile:
    """`py-spy record` of `pid` until `stop()`: non-blocking (it reads the process's memory
    without pausing it), idle samples left out, stacks written as collapsed text to `out`."""

    def __init__(self, pid: int, out: Path) -> None:
        self.out = out
        argv = [str(py_spy()), "record", "--pid", str(pid), "--rate", str(RATE_HZ), "--nonblocking",
                "--format", "raw", "--output", str(out)]  # fmt: skip
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        _, err = self.proc.communicate(timeout=60)
        if not self.out.exists():
            raise RuntimeError(f"py-spy wrote no profile: {err[-2000:]}")


def frame_name(frame: str) -> str:
    """`function (path/to/module.py:123)` -> `function (module.py)`."""
    name, _, where = frame.partition(" (")
    return f"{name} ({where.rsplit('/', 1)[-1].split(':', 1)[0]})" if where else name


def summarize(path: Path, seconds: float, top: int = 25) -> dict[str, Any]:
    """Shares of the non-idle samples: by the function on top of the stack (self) and by every
    function on the stack (inclusive, once per stack)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        frames = [frame_name(f) for f in stack.split(";")]
        total += count
        own[frames[-1]] += count
        for name in set(frames):
            inclusive[name] += count

    def shares(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, round(100 * n / max(1, total), 1)) for name, n in counter.most_common(top)]

    return {
        "samples": total,
        # Above 100 when several threads were busy (each thread is sampled).
        "non_idle_samples_pct_of_one_thread": round(100 * total / max(1.0, seconds * RATE_HZ), 1),
        "self_pct": shares(own),
        "inclusive_pct": shares(inclusive),
    }
