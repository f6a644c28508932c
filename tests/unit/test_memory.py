"""app/memory.py: freed heap memory goes back to the system, when resident memory has grown."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from app.memory import Trimmer

# In a fresh interpreter, so that nothing else this test session allocated is in the heap: 300,000
# blocks of 600 bytes (over pymalloc's 512, so glibc's malloc serves them), one kept in every
# `step`, so the freed ones lie between live ones (in runs of at least three pages, whatever the
# page size), where free() alone never gives pages back.
PROGRAM = """
import os
from app import memory

step = 3 * os.sysconf("SC_PAGE_SIZE") // 600 + 2
kept, freed = [], []
for i in range(300_000):
    (kept if i % step == 0 else freed).append(os.urandom(8) * 75)
del freed
before = memory.resident_bytes()
trimmed = memory.trim()
print(before >> 20, memory.resident_bytes() >> 20, trimmed)
"""


def test_trim_hands_the_pages_of_freed_blocks_back() -> None:
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, check=True, cwd=root)
    before, after, trimmed = out.stdout.split()
    assert trimmed == "True"  # glibc, as on every machine this project runs on (Debian)
    # About 170 MiB of freed blocks, resident until the trim: at least 60 MiB of it goes back.
    assert int(before) - int(after) >= 60, out.stdout


def test_a_trim_is_due_once_resident_memory_has_grown_by_the_step_since_the_last() -> None:
    resident, trims = [100], []

    def release() -> bool:
        trims.append(resident[0])
        resident[0] -= 30  # what the trim handed back
        return True

    trimmer = Trimmer(growth=50, resident=lambda: resident[0], release=release)
    assert trimmer.due()  # never trimmed yet
    trimmer.run_once()
    assert (trims, trimmer.base) == ([100], 70)
    resident[0] = 119
    assert not trimmer.due()  # a steady worker does not pay for trims
    resident[0] = 120
    assert trimmer.due()
    trimmer.run_once()
    assert (trims, trimmer.base) == ([100, 120], 90)


def test_without_a_resident_figure_it_never_trims() -> None:
    assert not Trimmer(growth=1, resident=lambda: 0, release=lambda: True).due()
