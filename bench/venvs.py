"""Virtual environments the benchmarks make for themselves under .bench/ (not committed), each
rebuilt when what it should hold changes: Quix Streams for the ingest peer, python-websockets for
the fan-out peer, py-spy for profiles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOME = ROOT / ".bench"
QUIX = "quixstreams==3.28.1"
PY_SPY = "py-spy==0.4.3"
WEBSOCKETS = "websockets==17.4"
# What streams.processor imports besides the standard library, at the versions the project pins.
PROCESSOR_NEEDS = ("orjson", "aiokafka", "prometheus-client")


def pinned(name: str) -> str:
    """`name==version` as constraints.txt pins it."""
    wanted = name.lower().replace("_", "-")
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        package, _, version = line.partition("==")
        if package.lower().replace("_", "-") == wanted:
            return f"{package}=={version}"
    raise LookupError(f"{name} is not pinned in constraints.txt")


def venv(name: str, requirements: list[str], project: bool = False) -> Path:
    """The python of venv .bench/`name` holding `requirements` (and this project, without its
    dependencies, when `project`), made or remade as needed."""
    home = HOME / name
    stamp = home / ".stamp"
    wanted = "\n".join([*requirements, *(["project (editable, no deps)"] if project else [])])
    if not stamp.exists() or stamp.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
        pip = [str(home / "bin" / "pip"), "install", "-q", "--disable-pip-version-check"]
        subprocess.run([*pip, *requirements], check=True)
        if project:
            subprocess.run([*pip, "--no-deps", "-e", str(ROOT)], check=True)
        stamp.write_text(wanted)
    return home / "bin" / "python"


def quix_python() -> Path:
    return venv("quix", [QUIX, *(pinned(name) for name in PROCESSOR_NEEDS)], project=True)


def websockets_python() -> Path:
    return venv("websockets", [WEBSOCKETS])


def py_spy() -> Path:
    return venv("py-spy", [PY_SPY]).parent / "py-spy"
