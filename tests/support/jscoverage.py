"""Block coverage of the pages' scripts (app/static/*.js) from Chromium's own profiler, through
the DevTools protocol (a Playwright CDP session): each browser test saves what V8 counted, and
the test run ends with a report of the lines and blocks no test reached (tests/conftest.py).

V8's detailed coverage gives, per function, nested source ranges with execution counts; a
range inside another overrides it. Painting the ranges from the widest to the narrowest gives
each character of the script the count of its innermost range.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from playwright.async_api import CDPSession, Page

ROOT = Path(__file__).resolve().parents[2]
STATIC = ROOT / "app" / "static"
RAW = ROOT / ".coverage-js"  # one JSON file per page, written during the run, read at its end


async def start(page: Page) -> CDPSession:
    """Count every block of every script this page will load (call before it navigates)."""
    session = await page.context.new_cdp_session(page)
    await session.send("Profiler.enable")
    await session.send("Profiler.startPreciseCoverage", {"callCount": True, "detailed": True})
    return session


async def save(session: CDPSession) -> None:
    """Write what V8 counted for our static scripts so far."""
    taken = await session.send("Profiler.takePreciseCoverage")
    ours = [s for s in taken["result"] if urlparse(s["url"]).path.startswith("/static/")]
    if ours:
        RAW.mkdir(exist_ok=True)
        (RAW / f"{uuid.uuid4().hex}.json").write_text(json.dumps(ours))


@dataclass
class FileCoverage:
    path: Path
    lines: int
    covered_lines: int
    blocks: int  # the ranges V8 reported in any run: functions, and blocks counted apart from them
    covered_blocks: int
    missed: list[tuple[int, int]]  # first and last line of each run of unreached lines

    @property
    def percent(self) -> float:
        return 100.0 * self.covered_lines / self.lines if self.lines else 100.0


def _counts(source: str, functions: list[dict[str, Any]]) -> list[int]:
    ranges = [r for f in functions for r in f["ranges"]]
    counts = [0] * len(source)
    for r in sorted(ranges, key=lambda r: r["startOffset"] - r["endOffset"]):  # widest first
        end = min(r["endOffset"], len(source))
        counts[r["startOffset"] : end] = [r["count"]] * (end - r["startOffset"])
    return counts


def _code_lines(source: str) -> list[tuple[int, int, int]]:
    """(line number, start offset, end offset) of each line holding code: not blank, not only a
    comment, not only closing brackets (V8 counts those with whatever precedes them)."""
    out, offset = [], 0
    for number, line in enumerate(source.splitlines(keepends=True), 1):
        text = line.strip()
        if text.strip("})];,") and not text.startswith("//") and text != '"use strict";':
            out.append((number, offset, offset + len(line)))
        offset += len(line)
    return out


def measure(raw_dir: Path = RAW) -> list[FileCoverage]:
    """Merge every saved page's counts: a character is covered when any page ran it."""
    covered: dict[str, list[bool]] = {}
    blocks: dict[str, set[int]] = {}  # start offsets: a block is reached when its first character is
    for raw in sorted(raw_dir.glob("*.json")):
        for script in json.loads(raw.read_text()):
            name = urlparse(script["url"]).path.removeprefix("/static/")
            source = (STATIC / name).read_text()
            counts = _counts(source, script["functions"])
            seen = covered.setdefault(name, [False] * len(source))
            covered[name] = [a or c > 0 for a, c in zip(seen, counts, strict=True)]
            blocks.setdefault(name, set()).update(r["startOffset"] for f in script["functions"] for r in f["ranges"])
    out = []
    for name, chars in sorted(covered.items()):
        source = (STATIC / name).read_text()
        lines = _code_lines(source)
        hit = {n for n, start, end in lines if any(chars[i] for i in range(start, end) if not source[i].isspace())}
        missed: list[tuple[int, int]] = []
        for n, _, _ in lines:
            if n in hit:
                continue
            if missed and missed[-1][1] in (n - 1, n - 2):  # one blank or comment line may sit between
                missed[-1] = (missed[-1][0], n)
            else:
                missed.append((n, n))
        reached = sum(chars[start] for start in blocks[name] if start < len(chars))
        out.append(FileCoverage(STATIC / name, len(lines), len(hit), len(blocks[name]), reached, missed))
    return out


def report(files: list[FileCoverage]) -> str:
    rows = [f"{'page script':32} {'lines':>6} {'miss':>5} {'blocks':>7} {'miss':>5} {'cover':>6}   missing lines"]
    for f in files:
        missing = ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in f.missed)
        rows.append(
            f"{f.path.relative_to(ROOT)!s:32} {f.lines:6} {f.lines - f.covered_lines:5} "
            f"{f.blocks:7} {f.blocks - f.covered_blocks:5} {f.percent:5.1f}%   {missing}"
        )
    return "\n".join(rows)
