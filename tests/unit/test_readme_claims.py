"""The README names the test behind each guarantee it states: every test it names must exist, so a
renamed or deleted test cannot leave a claim pointing at nothing."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NAMED = re.compile(r"\b(test_[a-z0-9_]+)\b(?!\.py)")  # a test function; `test_x.py` names a module
MODULE = re.compile(r"\b(test_[a-z0-9_]+)\.py\b")
DEFINED = re.compile(r"^(?:async )?def (test_[a-z0-9_]+)\(", re.MULTILINE)


def test_every_test_the_readme_names_exists() -> None:
    readme = (ROOT / "README.md").read_text()
    sources = list((ROOT / "tests").rglob("*.py"))
    functions = {name for path in sources for name in DEFINED.findall(path.read_text())}
    modules = {path.stem for path in sources}
    named = set(NAMED.findall(readme)) - modules
    assert len(named) >= 20  # the README does cite its tests
    assert sorted(named - functions) == []
    assert sorted(set(MODULE.findall(readme)) - modules) == []
