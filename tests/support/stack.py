"""The service's own processes (worker, gateway) started the way an operator would: the CLI."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from infra.kafka_server import KafkaCluster
from infra.ports import free_port
from infra.process import ServerProcess, gateway_feed_live, wait_until
from infra.redis_server import RedisServer

ROOT = Path(__file__).resolve().parents[2]
APP_ID = "auction-timer"  # AUCTION_TIMER_APP_ID's default, which the stack's workers run with:
# their consumer group and the prefix of the table's changelog


@dataclass
class Stack:
    kafka: KafkaCluster
    redis: RedisServer | None
    workdir: Path
    key_prefix: str
    overrides: dict[str, str] = field(default_factory=dict)
    processes: list[ServerProcess] = field(default_factory=list)

    def env(self, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AUCTION_TIMER_")}
        env.update(
            AUCTION_TIMER_KAFKA_BOOTSTRAP=self.kafka.bootstrap,
            AUCTION_TIMER_KEY_PREFIX=self.key_prefix,
            AUCTION_TIMER_TICK_INTERVAL_S="1",
            AUCTION_TIMER_RECONCILE_INTERVAL_S="2",
            AUCTION_TIMER_WORKER_METRICS_PORT="0",
            AUCTION_TIMER_LOG_LEVEL="INFO",
            AUCTION_TIMER_ALLOWED_ORIGINS="http://127.0.0.1:8080,http://allowed.test",
        )
        if self.redis is not None:
            env["AUCTION_TIMER_REDIS_URL"] = self.redis.url
        env.update(self.overrides)
        env.update(extra)
        return env

    def start(self, name: str, command: list[str], **extra: str) -> ServerProcess:
        extra.setdefault("AUCTION_TIMER_DATA_DIR", str(self.workdir / name))
        proc = ServerProcess(
            name,
            [sys.executable, "-m", "app.cli", *command],
            self.workdir / f"{name}-{len(self.processes)}.log",
            env=self.env(**extra),
            cwd=ROOT,
        )
        proc.start()
        self.processes.append(proc)
        return proc

    def start_worker(self, name: str = "worker", **extra: str) -> ServerProcess:
        return self.start(name, ["worker"], **extra)

    def start_gateway(self, name: str = "gateway", port: int | None = None, **extra: str) -> tuple[ServerProcess, str]:
        """Start `auction-timer gateway` and wait until its feed is live (/readyz): a tick
        published before that may never reach it. Returns the process and its URL."""
        port = port or free_port()
        proc = self.start(name, ["gateway"], AUCTION_TIMER_GATEWAY_PORT=str(port), **extra)
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: gateway_feed_live(url), 60, f"the gateway's live feed on port {port}", alive=proc.running)
        return proc, url

    def stop_all(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()

    def log_tails(self, lines: int = 80) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path}) ---\n{p.log_tail(lines)}" for p in self.processes)
