"""Apache Kafka (KRaft) from the jars `infra/kafka/pom.xml` pins, on the machine's Java 17.

`KafkaCluster(size=1)` is the dev and test broker; `size=3` gives replication
factor 3 with min.insync.replicas 2 for broker-failure tests. Every node is a
combined broker + controller so three JVMs make a whole quorum.

With `security`, clients must use SASL_SSL and authenticate with SCRAM (SHA-512 or
SHA-256; the users are created at format time), and the standard ACL authorizer
decides what each principal may do; the admin user is a super user and the brokers
talk to each other as it.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import logging
import shutil
import signal
import ssl
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.client import AIOKafkaClient

from infra.ports import free_ports
from infra.process import ServerProcess, wait_until
from infra.tls import TlsFiles
from streams.errors import InfraError

KAFKA_DIR = Path(__file__).resolve().parent / "kafka"
LIBS_DIR = KAFKA_DIR / "target" / "libs"
HEAP = "512m"

LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
# Every refused request is an INFO line: a test of ACLs would bury everything else.
logger.authorizer.name = kafka.authorizer.logger
logger.authorizer.level = WARN
"""


def require_jars() -> None:
    if not any(LIBS_DIR.glob("kafka_2.13-*.jar")):
        raise InfraError(
            f"Kafka jars are missing from {LIBS_DIR}; run `make deps` "
            "(it calls mvn dependency:copy-dependencies on infra/kafka/pom.xml)"
        )
    if shutil.which("java") is None:
        raise InfraError("java is not on PATH; install a Java 17 runtime (apt install openjdk-17-jre-headless)")


@dataclass(frozen=True)
class ScramUser:
    name: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class KafkaSecurity:
    """SASL_SSL for clients and between brokers, SCRAM users, and ACLs enforced.

    The controller listener stays PLAINTEXT on loopback: KRaft controllers cannot check SCRAM
    credentials (they live in the metadata the controllers serve), so its principal, ANONYMOUS,
    is a super user for the nodes' own requests. Clients never reach that listener."""

    tls: TlsFiles
    admin: ScramUser
    users: tuple[ScramUser, ...] = ()

    def scram_arguments(self) -> list[str]:
        """`kafka-storage format` options that create every user with both SCRAM mechanisms."""
        return [
            f"--add-scram={mechanism}=[name={user.name},password={user.password}]"
            for user in (self.admin, *self.users)
            for mechanism in ("SCRAM-SHA-512", "SCRAM-SHA-256")
        ]

    def client_options(self, user: ScramUser | None = None) -> dict[str, Any]:
        """aiokafka options for the fixture's own clients (the admin by default)."""
        who = user or self.admin
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": ssl.create_default_context(cafile=str(self.tls.ca_cert)),
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_plain_username": who.name,
            "sasl_plain_password": who.password,
        }

    def properties(self, keystore: Path) -> list[str]:
        admin = self.admin
        jaas = f'ScramLoginModule required username="{admin.name}" password="{admin.password}";'
        return [
            "sasl.enabled.mechanisms=SCRAM-SHA-512,SCRAM-SHA-256",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            f"listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.{jaas}",
            f"listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.{jaas}",
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={keystore}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.tls.ca_cert}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            f"super.users=User:{admin.name};User:ANONYMOUS",
            "allow.everyone.if.no.acl.found=false",
        ]


def new_cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


@dataclass
class KafkaNode:
    node_id: int
    port: int
    controller_port: int
    data_dir: Path
    process: ServerProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def properties(self, voters: str, size: int, security: KafkaSecurity | None = None) -> str:
        replication = min(size, 3)
        min_isr = 2 if size >= 3 else 1
        listener = "SASL_SSL" if security else "PLAINTEXT"
        secure = security.properties(self.data_dir / "server.pem") if security else []
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={self.node_id}",
                f"controller.quorum.voters={voters}",
                f"listeners={listener}://127.0.0.1:{self.port},CONTROLLER://127.0.0.1:{self.controller_port}",
                f"advertised.listeners={listener}://127.0.0.1:{self.port}",
                "controller.listener.names=CONTROLLER",
                f"inter.broker.listener.name={listener}",
                f"listener.security.protocol.map=CONTROLLER:PLAINTEXT,{listener}:{listener}",
                *secure,
                f"log.dirs={self.data_dir / 'log'}",
                f"offsets.topic.replication.factor={replication}",
                f"transaction.state.log.replication.factor={replication}",
                f"transaction.state.log.min.isr={min_isr}",
                f"default.replication.factor={replication}",
                f"min.insync.replicas={min_isr}",
                "offsets.topic.num.partitions=8",
                "num.partitions=8",
                # A fresh group forms at once instead of waiting 3 s for more members.
                "group.initial.rebalance.delay.ms=0",
                "auto.create.topics.enable=false",
                "log.segment.bytes=67108864",
                "log.retention.check.interval.ms=60000",
                "",
            ]
        )


@dataclass
class KafkaCluster:
    """`size` KRaft nodes on free loopback ports under `base_dir`."""

    base_dir: Path
    size: int = 1
    security: KafkaSecurity | None = None
    nodes: list[KafkaNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        ports = free_ports(2 * self.size)
        self.nodes = [
            KafkaNode(i + 1, ports[2 * i], ports[2 * i + 1], self.base_dir / f"node{i + 1}") for i in range(self.size)
        ]

    @property
    def bootstrap(self) -> str:
        return ",".join(node.bootstrap for node in self.nodes)

    def admin_options(self) -> dict[str, Any]:
        """aiokafka options for the fixture's own clients: the admin user, or none without security."""
        return self.security.client_options() if self.security else {}

    def _java(self, node: KafkaNode, main: list[str]) -> list[str]:
        return [
            "java",
            f"-Xms{HEAP}",
            f"-Xmx{HEAP}",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile=file:{node.data_dir / 'log4j2.properties'}",
            "-cp",
            f"{LIBS_DIR}/*",
            *main,
        ]

    def start(self, timeout: float = 90.0) -> None:
        require_jars()
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in self.nodes)
        cluster_id = new_cluster_id()
        for node in self.nodes:
            node.data_dir.mkdir(parents=True, exist_ok=True)
            (node.data_dir / "log4j2.properties").write_text(LOG4J2)
            config = node.data_dir / "server.properties"
            config.write_text(node.properties(voters, self.size, self.security))
            scram: list[str] = []
            if self.security:
                # Kafka's PEM key store: the private key (PKCS#8) followed by its certificate.
                tls = self.security.tls
                (node.data_dir / "server.pem").write_text(tls.server_key.read_text() + tls.server_cert.read_text())
                scram = self.security.scram_arguments()
            # `--cluster-id=` form: a base64url id may start with "-" and read as an option.
            fmt = ServerProcess(
                f"kafka-format-{node.node_id}",
                self._java(
                    node,
                    ["kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(config), *scram],
                ),
                node.data_dir / "format.log",
            )
            fmt.start()
            assert fmt.popen is not None
            if fmt.popen.wait(timeout=120) != 0:
                raise fmt.fail(f"formatting KRaft storage for node {node.node_id} failed")
        for node in self.nodes:
            self.start_node(node)
        self.wait_ready(timeout)

    def start_node(self, node: KafkaNode) -> None:
        node.process = ServerProcess(
            f"kafka-{node.node_id}",
            self._java(node, ["kafka.Kafka", str(node.data_dir / "server.properties")]),
            node.data_dir / "server.log",
        )
        node.process.start()

    def live_nodes(self) -> list[KafkaNode]:
        return [n for n in self.nodes if n.process is not None and n.process.running()]

    def wait_ready(self, timeout: float = 90.0, expected: int | None = None) -> None:
        """Wait until a metadata request lists `expected` brokers (default: every live node)."""
        want = expected if expected is not None else len(self.live_nodes())
        live = self.live_nodes()
        if len(live) < want:
            raise InfraError(f"only {len(live)} of {want} Kafka nodes are running")
        bootstrap = ",".join(n.bootstrap for n in live)
        try:
            wait_until(
                lambda: count_brokers(bootstrap, **self.admin_options()) >= want,
                timeout,
                f"{want} Kafka broker(s) at {bootstrap} to answer a metadata request",
                interval=0.5,
                alive=lambda: all(n.process is not None and n.process.running() for n in live),
            )
        except InfraError as exc:
            tails = "\n".join(n.process.fail(f"node {n.node_id}").args[0] for n in live if n.process)
            raise InfraError(f"{exc}\n{tails}") from exc

    def stop(self) -> None:
        """Ask every node at once: a quorum stopping one node at a time stalls the last ones."""
        procs = [n.process for n in self.nodes if n.process is not None]
        for proc in procs:
            proc.kill(signal.SIGTERM)
        for proc in procs:
            proc.wait_stopped(timeout=15)

    def log_tails(self, lines: int = 40) -> str:
        return "\n".join(
            f"--- kafka node {n.node_id} ({n.process.log_path}) ---\n{n.process.log_tail(lines)}"
            for n in self.nodes
            if n.process is not None
        )


def count_brokers(bootstrap: str, **client_options: Any) -> int:
    """Brokers a metadata request at `bootstrap` returns; 0 when nobody answers yet. A booting
    broker refuses connections, which aiokafka logs as errors: silenced here, where refusal is
    the expected answer (a caller that waits too long says so itself)."""

    async def probe() -> int:
        client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=3000, **client_options)
        try:
            await client.bootstrap()
            return len(client.cluster.brokers())
        except Exception:  # noqa: BLE001 - any failure means "not ready yet"
            return 0
        finally:
            await client.close()

    aiokafka_log = logging.getLogger("aiokafka")
    level = aiokafka_log.level
    aiokafka_log.setLevel(logging.CRITICAL)
    try:
        # In a thread of its own: on Python 3.11, closing a bootstrapped client upsets coverage's
        # tracer for the calling frame, and the caller's (the demo's) following lines went missing
        # from `make test`'s coverage report. A thread has its own tracer.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as thread:
            return thread.submit(asyncio.run, probe()).result()
    finally:
        aiokafka_log.setLevel(level)
