"""The fan-out benchmarks' outside programs, built or installed by the bench itself on first use:
the Go load client (bench/loadclient, its modules pinned by go.sum; built into .bench/), Node
`ws` (bench/peers/node, pinned by its package-lock.json) and python-websockets (a venv under
.bench/, bench/venvs.py)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from bench.venvs import HOME, websockets_python
from infra.ports import free_port, is_listening
from infra.process import ServerProcess, wait_until

BENCH = Path(__file__).resolve().parent
PEERS = BENCH / "peers"
NODE = PEERS / "node"


def loadclient() -> Path:
    """Build the Go load client (incremental: a no-op when nothing changed)."""
    binary = HOME / "loadclient"
    subprocess.run(["go", "build", "-mod=readonly", "-o", str(binary), "."], cwd=BENCH / "loadclient", check=True)
    return binary


def node_modules() -> None:
    """`npm ci` into bench/peers/node when its lock file is newer than what is installed."""
    stamp = NODE / "node_modules" / ".stamp"
    if not stamp.exists() or (NODE / "package-lock.json").stat().st_mtime > stamp.stat().st_mtime:
        subprocess.run(["npm", "ci", "--no-audit", "--no-fund"], cwd=NODE, check=True, stdout=subprocess.DEVNULL)
        stamp.touch()


def prepare() -> Path:
    """Everything the fan-out benchmark runs besides the project; returns the load client."""
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
