"""The fan-out benchmarks' outside programs, built or installed by the bench itself on first use
into bench/.build (not committed): the Go load client (bench/loadclient, its modules pinned by
go.sum), Node `ws` (bench/peers/node, pinned by its package-lock.json) and python-websockets
(bench/peers/requirements.txt, in a venv of its own)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from infra.ports import free_port, is_listening
from infra.process import ServerProcess, wait_until

BENCH = Path(__file__).resolve().parents[1]
BUILD = BENCH / ".build"
PEERS = BENCH / "peers"
NODE = PEERS / "node"


def loadclient() -> Path:
    """Build the Go load client (incremental: a no-op when nothing changed)."""
    binary = BUILD / "loadclient"
    subprocess.run(["go", "build", "-mod=readonly", "-o", str(binary), "."], cwd=BENCH / "loadclient", check=True)
    return binary


def _stale(stamp: Path, *sources: Path) -> bool:
    return not stamp.exists() or any(s.stat().st_mtime > stamp.stat().st_mtime for s in sources)


def node_modules() -> None:
    stamp = NODE / "node_modules" / ".stamp"
    if _stale(stamp, NODE / "package-lock.json"):
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE, check=True, stdout=subprocess.DEVNULL)
        stamp.touch()


def websockets_python() -> Path:
    venv = BUILD / "websockets-venv"
    stamp = venv / ".stamp"
    requirements = PEERS / "requirements.txt"
    if _stale(stamp, requirements):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([venv / "bin" / "pip", "install", "-q", "-r", str(requirements)], check=True)
        stamp.touch()
    return venv / "bin" / "python"


def prepare() -> Path:
    """Everything the fan-out benchmarks run besides the project; returns the load client."""
    BUILD.mkdir(exist_ok=True)
    node_modules()
    websockets_python()
    return loadclient()


def start_peer(name: str, state: dict[str, Any], workdir: Path) -> tuple[ServerProcess, str]:
    """Start reference server `name` ("node-ws" or "python-websockets") on a free port; returns
    the process and its ws:// URL once it listens."""
    port = free_port()
    if name == "node-ws":
        argv = ["node", str(NODE / "server.js"), str(port), json.dumps(state)]
    else:
        argv = [str(websockets_python()), str(PEERS / "websockets_server.py"), str(port), json.dumps(state)]
    proc = ServerProcess(name, argv, workdir / f"{name}-{port}.log")
    proc.start()
    wait_until(lambda: is_listening(port), 30, f"{name} on port {port}", alive=proc.running)
    return proc, f"ws://127.0.0.1:{port}"
