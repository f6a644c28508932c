"""The service against a Redis that speaks only TLS (with client certificates) and lets in only
an ACL user limited to the service's keys: worker, gateway and replay work, and the password
never reaches a log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from infra.kafka_server import KafkaCluster
from infra.redis_server import AclUser, RedisServer
from infra.tls import TlsFiles, throwaway_certs
from projections.keys import Keys
from streams import events as ev
from streams import topics
from tests.conftest import print_on_failure
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce
from tests.support.stack import ROOT, Stack
from tests.support.waiting import eventually

SERVICE_PASSWORD = "service-secret-7f3a91"
WRONG_PASSWORD = "wrong-secret-c4e2d8"
# What the service needs, and no more: its own keys, reads, writes, scripts, PING/AUTH/CLIENT.
SERVICE_RULES = "+@read +@write +@scripting +@connection"


@pytest.fixture
def tls(tmp_path: Path) -> TlsFiles:
    return throwaway_certs(tmp_path / "tls")


@pytest.fixture
def secure_redis(
    tmp_path: Path, tls: TlsFiles, key_prefix: str, request: pytest.FixtureRequest
) -> Iterator[RedisServer]:
    keys = Keys(key_prefix)
    service = AclUser("auction-timer", SERVICE_PASSWORD, f"~{keys.data}* ~{keys.service}* {SERVICE_RULES}")
    server = RedisServer(tmp_path / "redis-secure", tls=tls, users=(AclUser("admin", "admin-pw"), service))
    try:
        server.start()
        yield server
    finally:
        print_on_failure(request, lambda: server.process.log_tail() if server.process else "")
        server.stop()


@pytest.fixture
def secure_stack(
    kafka: KafkaCluster, secure_redis: RedisServer, tls: TlsFiles, tmp_path: Path, key_prefix: str,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:  # fmt: skip
    s = Stack(kafka, None, tmp_path, key_prefix, overrides={
        "AUCTION_TIMER_REDIS_URL": secure_redis.url,  # rediss://
        "AUCTION_TIMER_REDIS_USERNAME": "auction-timer",
        "AUCTION_TIMER_REDIS_PASSWORD": SERVICE_PASSWORD,
        "AUCTION_TIMER_REDIS_TLS_CA_FILE": str(tls.ca_cert),
        "AUCTION_TIMER_REDIS_TLS_CERT_FILE": str(tls.client_cert),
        "AUCTION_TIMER_REDIS_TLS_KEY_FILE": str(tls.client_key),
        "AUCTION_TIMER_LOG_LEVEL": "DEBUG",
    })  # fmt: skip
    try:
        yield s
    finally:
        print_on_failure(request, s.log_tails)
        s.stop_all()


async def test_worker_gateway_and_replay_over_tls_as_an_acl_user(
    secure_stack: Stack, secure_redis: RedisServer, key_prefix: str
) -> None:
    stack = secure_stack
    assert secure_redis.url.startswith("rediss://")
    stack.start_worker(AUCTION_TIMER_RECONCILE_INTERVAL_S="1")
    _, base = stack.start_gateway()
    admin = secure_redis.client()
    keys = Keys(key_prefix)
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        start = now_ms()
        await produce(producer, record(ev.AuctionStarted("tls-1", start, start + 600_000, ev.Policy(1, 1, 1), "m")))
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["auction_id"] == "tls-1", 60)

    def projected() -> bool:
        return admin.hget(keys.timer("tls-1"), "version") == "1"

    await eventually(lambda: asyncio.to_thread(projected), 60, "the projection written over TLS")
    # The reconciler's check and repair (scripts, the stream) work within the ACL too.
    admin.hset(keys.timer("tls-1"), "ends_at_ms", "1")
    await eventually(lambda: asyncio.to_thread(lambda: admin.xlen(keys.reconciliations) == 1), 30, "a repair")

    async with aiohttp.ClientSession() as session:
        body = await (await session.get(f"{base}/auctions/tls-1/timer")).json()
        assert (body["source"], body["version"]) == ("redis", 1)
        assert await (await session.get(f"{base}/readyz")).json() == {"kafka": True, "redis": True}

    verified = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app.cli", "replay", "--verify"],
        env=stack.env(), capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert SERVICE_PASSWORD not in verified.stdout + verified.stderr

    # A gateway with the wrong password: Redis is not ready for it, it says why, and neither
    # password is in any log.
    wrong, wrong_base = stack.start_gateway("gateway-wrong", AUCTION_TIMER_REDIS_PASSWORD=WRONG_PASSWORD)
    async with aiohttp.ClientSession() as session:
        assert (await (await session.get(f"{wrong_base}/readyz")).json())["redis"] is False
        assert (await session.get(f"{wrong_base}/auctions/tls-1/timer")).status in (200, 503)
    await eventually(
        lambda: asyncio.sleep(0, result="redis read failed" in wrong.log_path.read_text()), 10, "the failure logged"
    )
    logs = "".join(p.log_path.read_text() for p in stack.processes)
    assert "invalid username-password pair" in logs
    assert SERVICE_PASSWORD not in logs and WRONG_PASSWORD not in logs
    admin.close()
