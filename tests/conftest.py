"""Fixtures that start real Kafka and Redis on free ports and always tear them down.

Scopes: Redis standalone is shared by the session (tests isolate themselves with a
unique key prefix and never flush it); Kafka is started per test, because the
topic names are fixed by the contract and a fresh broker is the only clean slate.
Tests that stop or kill a server get a private one. On failure, the servers' log
tails are printed with the test's report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest

from infra.kafka_server import KafkaCluster, KafkaSecurity
from infra.redis_server import MASTER_NAME, AclUser, RedisSentinelGroup, RedisServer
from infra.tls import throwaway_certs
from tests.support import jscoverage, secure
from tests.support.stack import APP_ID, ROOT, Stack

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
# The Sentinel group's users: one for the fixture, its Sentinels and replication; one for the service.
SENTINEL_ADMIN = AclUser("admin", "s3cret-for-tests")
SENTINEL_SERVICE = AclUser("auction-timer", "service-s3cret", "~* +@read +@write +@scripting +@connection")


def pytest_sessionstart(session: pytest.Session) -> None:
    shutil.rmtree(jscoverage.RAW, ignore_errors=True)  # the page's coverage is this run's alone


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """The pages' scripts' coverage, when browser tests ran (Python's is pytest-cov's report)."""
    if jscoverage.RAW.exists():
        terminalreporter.write_sep("-", "coverage of the pages' scripts (Chromium block coverage)")
        terminalreporter.write_line(jscoverage.report(jscoverage.measure()))


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


def failed(request: pytest.FixtureRequest) -> bool:
    reports = [getattr(request.node, f"rep_{when}", None) for when in ("setup", "call")]
    return any(report is not None and report.failed for report in reports)


def print_on_failure(request: pytest.FixtureRequest, describe: Callable[[], str]) -> None:
    if failed(request):
        print(describe())


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def kafka(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka"), size=1)
    try:
        cluster.start()
        yield cluster
    finally:
        print_on_failure(request, cluster.log_tails)
        cluster.stop()


@pytest.fixture
def kafka3(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka3"), size=3)
    try:
        cluster.start()
        yield cluster
    finally:
        print_on_failure(request, cluster.log_tails)
        cluster.stop()


@pytest.fixture
def kafka_secure(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Iterator[KafkaCluster]:
    """A broker that speaks only SASL_SSL, knows the SCRAM users of tests/support/secure.py, and
    enforces the service's ACLs with the standard authorizer (the admin is the only super user).
    The ACLs are what an operator creates: `auction-timer acls --apply`, run as the admin."""
    base = tmp_path_factory.mktemp("kafka-secure")
    security = KafkaSecurity(throwaway_certs(base / "tls"), secure.ADMIN, tuple(secure.USERS.values()))
    cluster = KafkaCluster(base, size=1, security=security)
    try:
        cluster.start()
        env = {**os.environ, **secure.principal_env(cluster, secure.ADMIN), "AUCTION_TIMER_APP_ID": APP_ID}
        applied = subprocess.run([sys.executable, "-m", "app.cli", "acls", "--apply"], env=env, cwd=ROOT,
                                 capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
        assert applied.returncode == 0, applied.stdout + applied.stderr
        yield cluster
    finally:
        print_on_failure(request, cluster.log_tails)
        cluster.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_private(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisServer]:
    """A Redis of this test's own, for tests that stop, kill or flush it."""
    server = RedisServer(tmp_path / "redis-private")
    try:
        server.start()
        yield server
    finally:
        print_on_failure(request, lambda: server.process.log_tail() if server.process else "")
        server.stop()


@pytest.fixture
def redis_sentinel(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[RedisSentinelGroup]:
    group = RedisSentinelGroup(tmp_path / "sentinel", users=(SENTINEL_ADMIN, SENTINEL_SERVICE))
    try:
        group.start()
        yield group
    finally:
        print_on_failure(
            request,
            lambda: (
                "\n".join(p.log_tail(30) for p in group.sentinels)
                + (group.primary.process.log_tail(30) if group.primary.process else "")
            ),
        )
        group.stop()


@pytest.fixture
def key_prefix() -> str:
    """Every Redis key a test writes starts with this, so the shared server stays clean."""
    return f"test:{uuid.uuid4().hex[:12]}:"


@pytest.fixture
def stack(
    kafka: KafkaCluster, redis_server: RedisServer, tmp_path: Path, key_prefix: str, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """Kafka (fresh) and Redis (shared, own key prefix) for the service's processes."""
    s = Stack(kafka, redis_server, tmp_path, key_prefix)
    try:
        yield s
    finally:
        print_on_failure(request, s.log_tails)
        s.stop_all()


@pytest.fixture
def private_stack(
    kafka: KafkaCluster, redis_private: RedisServer, tmp_path: Path, key_prefix: str, request: pytest.FixtureRequest
) -> Iterator[Stack]:
    """Like `stack`, with a Redis the test may stop, flush or kill."""
    s = Stack(kafka, redis_private, tmp_path, key_prefix)
    try:
        yield s
    finally:
        print_on_failure(request, s.log_tails)
        s.stop_all()


@pytest.fixture
def sentinel_stack(
    kafka: KafkaCluster,
    redis_sentinel: RedisSentinelGroup,
    tmp_path: Path,
    key_prefix: str,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:
    """Kafka plus Redis behind three Sentinels, as the service is configured for HA: as an ACL user
    that may only read, write and run scripts."""
    s = Stack(kafka, None, tmp_path, key_prefix, overrides={
        "AUCTION_TIMER_REDIS_SENTINELS": redis_sentinel.sentinel_addresses,
        "AUCTION_TIMER_REDIS_SENTINEL_MASTER": MASTER_NAME,
        "AUCTION_TIMER_REDIS_USERNAME": SENTINEL_SERVICE.name,
        "AUCTION_TIMER_REDIS_PASSWORD": SENTINEL_SERVICE.password,
    })  # fmt: skip
    try:
        yield s
    finally:
        print_on_failure(request, s.log_tails)
        s.stop_all()


@pytest.fixture(scope="module")
def kafka_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaCluster]:
    """One broker for a module whose tests isolate themselves by auction id."""
    cluster = KafkaCluster(tmp_path_factory.mktemp("kafka-module"), size=1)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()
