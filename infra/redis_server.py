"""Redis 7 from Debian's `redis-server`: standalone with AOF, or primary + replica + three Sentinels.

Sentinel mode uses a one-second down-after so a failover takes seconds, as the
failover tests and the demo's fault drills want.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from infra.ports import free_port, free_ports
from infra.process import ServerProcess, wait_until
from infra.tls import TlsFiles
from streams.errors import InfraError

MASTER_NAME = "auction-timer"


def require_redis() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise InfraError("redis-server is not on PATH; run `make deps` (it installs Debian's redis-server)")
    return binary


@dataclass(frozen=True)
class AclUser:
    """A Redis ACL user: `rules` name the keys, channels and commands it may use."""

    name: str
    password: str
    rules: str = "~* &* +@all"

    @property
    def line(self) -> str:
        return f"{self.name} on >{self.password} {self.rules}"


@dataclass
class RedisServer:
    """One redis-server on a free port; `replica_of` makes it a replica of that port.

    With `tls` it listens only for TLS, and wants a client certificate signed by the CA. With
    `users` the default user is off and only those ACL users may connect; the first one is
    what the fixture itself (readiness, `client()`) connects as.
    """

    data_dir: Path
    port: int = field(default_factory=free_port)
    password: str | None = None
    replica_of: int | None = None
    appendonly: bool = True
    tls: TlsFiles | None = None
    users: tuple[AclUser, ...] = ()
    process: ServerProcess | None = None

    @property
    def url(self) -> str:
        """The URL to connect to (no credentials: they are settings of their own)."""
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    def argv(self) -> list[str]:
        args = [
            require_redis(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--appendfsync", "everysec",
            "--logfile", "",
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password, "--masterauth", self.password]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        if self.tls is not None:
            args[args.index("--port") + 1] = "0"
            args += ["--tls-port", str(self.port), "--tls-cert-file", str(self.tls.server_cert),
                     "--tls-key-file", str(self.tls.server_key), "--tls-ca-cert-file", str(self.tls.ca_cert),
                     "--tls-auth-clients", "yes"]  # fmt: skip
        if self.users:
            args += ["--user", "default", "off"]
            for user in self.users:
                args += ["--user", *user.line.split()]
            # A replica (and, after a failover, the old primary) authenticates as the first user.
            args += ["--masteruser", self.users[0].name, "--masterauth", self.users[0].password]
        return args

    def client_options(self) -> dict[str, Any]:
        """How the fixture's own clients connect: as the first ACL user, over TLS if any."""
        options: dict[str, Any] = {"port": self.port, "password": self.password}
        if self.users:
            options.update(username=self.users[0].name, password=self.users[0].password)
        if self.tls is not None:
            options.update(ssl=True, ssl_ca_certs=str(self.tls.ca_cert), ssl_certfile=str(self.tls.client_cert),
                           ssl_keyfile=str(self.tls.client_key))  # fmt: skip
        return options

    def _answers(self) -> bool:
        try:
            return bool(redis.Redis(socket_timeout=0.5, **self.client_options()).ping())
        except redis.RedisError:
            return False

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = ServerProcess(f"redis-{self.port}", self.argv(), self.data_dir / "redis.log")
        self.process.start()
        try:
            wait_until(
                self._answers,
                timeout,
                f"redis-server on port {self.port}",
                alive=self.process.running,
            )
        except InfraError as exc:
            raise self.process.fail(str(exc)) from exc

    def client(self) -> redis.Redis:
        return redis.Redis(decode_responses=True, **self.client_options())

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()


@dataclass
class RedisSentinelGroup:
    """A primary, one replica and three Sentinels watching them. With `users` the data nodes
    admit only those ACL users (see RedisServer), and the Sentinels log in as the first."""

    base_dir: Path
    password: str | None = None
    users: tuple[AclUser, ...] = ()
    down_after_ms: int = 1000
    primary: RedisServer = field(init=False)
    replica: RedisServer = field(init=False)
    sentinel_ports: list[int] = field(init=False)
    sentinels: list[ServerProcess] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        ports = free_ports(5)
        self.primary = RedisServer(self.base_dir / "primary", ports[0], self.password, users=self.users)
        self.replica = RedisServer(
            self.base_dir / "replica", ports[1], self.password, replica_of=ports[0], users=self.users
        )
        self.sentinel_ports = ports[2:]

    @property
    def sentinel_addresses(self) -> str:
        """The `AUCTION_TIMER_REDIS_SENTINELS` value for this group."""
        return ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports)

    def start(self, timeout: float = 30.0) -> None:
        self.primary.start()
        self.replica.start()
        wait_until(self._replica_in_sync, timeout, "the replica to sync with the primary")
        for port in self.sentinel_ports:
            folder = self.base_dir / f"sentinel-{port}"
            folder.mkdir(parents=True, exist_ok=True)
            conf = folder / "sentinel.conf"
            lines = [
                f"port {port}",
                "bind 127.0.0.1",
                f"dir {folder}",
                f"sentinel monitor {MASTER_NAME} 127.0.0.1 {self.primary.port} 2",
                f"sentinel down-after-milliseconds {MASTER_NAME} {self.down_after_ms}",
                f"sentinel failover-timeout {MASTER_NAME} 10000",
                f"sentinel parallel-syncs {MASTER_NAME} 1",
            ]
            if self.password:
                lines.append(f"sentinel auth-pass {MASTER_NAME} {self.password}")
            if self.users:
                lines.append(f"sentinel auth-user {MASTER_NAME} {self.users[0].name}")
                lines.append(f"sentinel auth-pass {MASTER_NAME} {self.users[0].password}")
            conf.write_text("\n".join(lines) + "\n")
            proc = ServerProcess(
                f"sentinel-{port}", [require_redis(), str(conf), "--sentinel"], folder / "sentinel.log"
            )
            proc.start()
            self.sentinels.append(proc)
        wait_until(self._sentinels_agree, timeout, "three Sentinels to see the primary and the replica")

    def _replica_in_sync(self) -> bool:
        try:
            info = self.replica.client().info("replication")
        except redis.RedisError:
            return False
        return info.get("master_link_status") == "up"

    def _sentinel(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, decode_responses=True, socket_timeout=1)

    def _sentinels_agree(self) -> bool:
        try:
            for port in self.sentinel_ports:
                master: dict[str, Any] = self._sentinel(port).sentinel_master(MASTER_NAME)  # type: ignore[assignment]
                if int(master.get("num-other-sentinels", 0)) < 2 or int(master.get("num-slaves", 0)) < 1:
                    return False
            return True
        except redis.RedisError:
            return False

    def current_primary_port(self) -> int:
        """The port Sentinel names as primary right now."""
        address = self._sentinel(self.sentinel_ports[0]).sentinel_get_master_addr_by_name(MASTER_NAME)
        if not isinstance(address, (list, tuple)):
            raise InfraError(f"Sentinel does not know the primary {MASTER_NAME!r}")
        return int(address[1])

    def kill_primary(self) -> RedisServer:
        """kill -9 whichever server is primary now; returns the survivor."""
        port = self.current_primary_port()
        victim, survivor = (self.primary, self.replica) if port == self.primary.port else (self.replica, self.primary)
        victim.kill()
        return survivor

    def wait_failover(self, old_port: int, timeout: float = 30.0) -> float:
        """Block until Sentinel promotes a new primary; returns the promotion time (time.time())."""
        wait_until(lambda: self.current_primary_port() != old_port, timeout, "Sentinel to promote the replica")
        return time.time()

    def stop(self) -> None:
        for proc in self.sentinels:
            proc.stop()
        self.replica.stop()
        self.primary.stop()
