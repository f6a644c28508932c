"""Reading Faust's recovery tables out of a worker's JSON log: where each changelog partition's
recovery started and where its end was, so a test can count the records a restart read."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

_ROW = re.compile(r"^\|\s*(\S+)\s*\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|$")


def _table(message: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for line in message.splitlines():
        match = _ROW.match(line.strip())
        if match:
            out[int(match.group(2))] = int(match.group(3))
    return out


def recoveries(log: Path) -> list[tuple[dict[int, int], dict[int, int]]]:
    """Every active recovery in the log, oldest first: (highwater, reading starts at) per partition."""
    out: list[tuple[dict[int, int], dict[int, int]]] = []
    highwater: dict[int, int] | None = None
    for line in log.read_text().splitlines():
        if not line.startswith("{"):
            continue
        message = str(orjson.loads(line).get("message", ""))
        if "Highwater - Active" in message:
            highwater = _table(message)
        elif "Reading Starts At - Active" in message and highwater is not None:
            out.append((highwater, _table(message)))
            highwater = None
    return out


def records_read(highwater: dict[int, int], starts: dict[int, int], partitions: set[int] | None = None) -> int:
    """How many changelog records the recovery read (Faust logs both as offsets minus one)."""
    return sum(max(0, highwater[p] - starts.get(p, -1)) for p in highwater if partitions is None or p in partitions)
