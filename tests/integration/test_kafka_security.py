"""The service against a broker that speaks only SASL_SSL (SCRAM users) and enforces the ACLs of
app/acls.py with the standard authorizer: each principal may do exactly what the README's table
says, the worker, a gateway, upstream producers and replay work as their own principals, a forged
command from anyone but the worker is refused by the broker, and no password reaches a log."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import redis.asyncio as aioredis
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.client import AIOKafkaClient
from aiokafka.errors import GroupAuthorizationFailedError, TopicAuthorizationFailedError
from aiokafka.protocol.metadata import MetadataRequest

from infra.kafka_server import KafkaCluster, ScramUser
from infra.ports import free_port
from infra.redis_server import RedisServer
from projections.keys import Keys
from streams import events as ev
from streams import topics
from streams.changelog import read_table
from streams.topic_admin import TopicPlan, ensure_topics
from tests.conftest import print_on_failure
from tests.support.events import now_ms, record
from tests.support.gateway import Recorder
from tests.support.kafka import TopicWatcher, produce
from tests.support.projection import mismatches
from tests.support.secure import SECRETS, USERS, options_of, principal_env
from tests.support.stack import APP_ID, ROOT, Stack
from tests.support.waiting import eventually

CHANGELOG = topics.changelog_topic(APP_ID)
EVERY_TOPIC = (*topics.ALL_TOPICS, CHANGELOG)
GROUPS = (APP_ID, f"{APP_ID}-projection")
# The README's table (Security), written out: what each principal may write, read, and join.
WRITES = {
    "worker": {topics.COMMANDS, topics.TICKS, topics.TIMER_EVENTS, topics.AUDIT, topics.ANALYTICS, topics.DLQ,
               CHANGELOG},
    "gateway": {topics.AUDIT, topics.ANALYTICS},
    "offers": {topics.AUCTION_STARTED, topics.AUCTION_CANCELLED},
    "bids": {topics.BID_PLACED},
    "replay": set(),
}  # fmt: skip
READS = {
    "worker": {*topics.INPUT_TOPICS, topics.TIMER_EVENTS, CHANGELOG},
    "gateway": {topics.TICKS, topics.TIMER_EVENTS},
    "offers": set(),
    "bids": set(),
    "replay": {*topics.INPUT_TOPICS, CHANGELOG},
}
JOINS = {"worker": set(GROUPS), "gateway": set(), "offers": set(), "bids": set(), "replay": set()}
# Only the worker creates topics, and only the service's (its start-up creates what is missing).
CREATES = {"worker": {f"{APP_ID}-probe"}, "gateway": set(), "offers": set(), "bids": set(), "replay": set()}


async def visible(kafka: KafkaCluster, options: dict[str, Any]) -> set[str]:
    """The topics a principal may describe (without Describe, neither Read nor Write is allowed)."""
    client = AIOKafkaClient(bootstrap_servers=kafka.bootstrap, **options)
    await client.bootstrap()
    try:
        node = client.get_random_node()
        described = (await client.send(node, MetadataRequest(list(EVERY_TOPIC), False))).to_object()["topics"]
    finally:
        await client.close()
    return {t["topic"] for t in described if t["error_code"] == 0}


async def writable(kafka: KafkaCluster, options: dict[str, Any]) -> set[str]:
    # Not idempotent: its InitProducerId needs Write on some topic, which replay has none of.
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=False, **options)
    await producer.start()
    allowed = set()
    try:
        for topic in EVERY_TOPIC:
            try:
                await producer.send_and_wait(topic, b"acl-probe", key=b"acl-probe", partition=0)
                allowed.add(topic)
            except TopicAuthorizationFailedError:
                pass
    finally:
        await producer.stop()
    return allowed


async def readable(kafka: KafkaCluster, options: dict[str, Any], candidates: set[str]) -> set[str]:
    """Of `candidates` (which the principal may describe, and which hold a record), those it may read."""
    consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, enable_auto_commit=False, **options)
    await consumer.start()
    allowed = set()
    try:
        for topic in sorted(candidates):
            tp = TopicPartition(topic, 0)
            consumer.assign([tp])
            try:
                await consumer.seek_to_beginning(tp)
                batch = await consumer.getmany(tp, timeout_ms=10_000)
            except TopicAuthorizationFailedError:
                continue
            assert batch.get(tp), f"{topic}: neither records nor a refusal"
            allowed.add(topic)
    finally:
        await consumer.stop()
    return allowed


async def joinable(kafka: KafkaCluster, options: dict[str, Any]) -> set[str]:
    """The worker's consumer groups whose offsets the principal may fetch (what joining needs first)."""
    allowed = set()
    for group in GROUPS:
        consumer = AIOKafkaConsumer(bootstrap_servers=kafka.bootstrap, group_id=group, enable_auto_commit=False,
                                    **options)  # fmt: skip
        await consumer.start()
        try:
            consumer.assign([TopicPartition(topics.TIMER_EVENTS, 0)])
            await consumer.committed(TopicPartition(topics.TIMER_EVENTS, 0))
            allowed.add(group)
        except (GroupAuthorizationFailedError, TopicAuthorizationFailedError):
            pass
        finally:
            await consumer.stop()
    return allowed


async def creatable(kafka: KafkaCluster, options: dict[str, Any]) -> set[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap, **options)
    await admin.start()
    allowed = set()
    try:
        for name in (f"{APP_ID}-probe", "someone.elses.topic"):
            response = await admin.create_topics([NewTopic(name, 1, 1)])
            [(_, code, *_)] = response.topic_errors
            if code == 0:
                allowed.add(name)
    finally:
        await admin.close()
    return allowed


async def test_each_principal_may_do_only_what_the_acl_table_says(kafka_secure: KafkaCluster) -> None:
    kafka = kafka_secure
    admin = kafka.admin_options()
    await ensure_topics(TopicPlan(kafka.bootstrap, 1, 0, APP_ID, client_options=admin))
    seed = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, **admin)
    await seed.start()
    for topic in EVERY_TOPIC:  # a record in every topic, so a permitted read reads something
        await seed.send_and_wait(topic, b"seed", key=b"seed", partition=0)
    await seed.stop()

    writes, reads, joins, creates = {}, {}, {}, {}
    for role, user in USERS.items():
        options = options_of(kafka, user)
        seen = await visible(kafka, options)
        writes[role] = await writable(kafka, options)
        reads[role] = await readable(kafka, options, seen)
        joins[role] = await joinable(kafka, options)
        creates[role] = await creatable(kafka, options)
        assert writes[role] | reads[role] <= seen
    assert writes == WRITES
    assert reads == READS
    assert joins == JOINS
    assert creates == CREATES


@pytest.fixture
def secure_stack(
    kafka_secure: KafkaCluster, redis_server: RedisServer, tmp_path: Path, key_prefix: str,
    request: pytest.FixtureRequest,
) -> Iterator[Stack]:  # fmt: skip
    # DEBUG: the most a process ever logs, and still no password in it.
    s = Stack(kafka_secure, redis_server, tmp_path, key_prefix, overrides={"AUCTION_TIMER_LOG_LEVEL": "DEBUG"})
    try:
        yield s
    finally:
        print_on_failure(request, s.log_tails)
        s.stop_all()


def producer_as(kafka: KafkaCluster, user: ScramUser) -> AIOKafkaProducer:
    return AIOKafkaProducer(bootstrap_servers=kafka.bootstrap, acks="all", enable_idempotence=True,
                            **options_of(kafka, user))  # fmt: skip


async def test_the_service_runs_as_its_principals_and_the_broker_refuses_a_forged_command(
    secure_stack: Stack, kafka_secure: KafkaCluster, redis_server: RedisServer, key_prefix: str
) -> None:
    stack, kafka = secure_stack, kafka_secure
    stack.start_worker(**principal_env(kafka, USERS["worker"]))
    watch = TopicWatcher(kafka.bootstrap, (topics.TIMER_EVENTS, topics.COMMANDS, topics.AUDIT), kafka.admin_options())
    offers, bids, gateway_producer = (producer_as(kafka, USERS[r]) for r in ("offers", "bids", "gateway"))
    for producer in (offers, bids, gateway_producer):
        await producer.start()
    await watch.start()
    try:
        await produce(offers, record(ev.AuctionStarted("sec-warm", now_ms(), now_ms() + 3_600_000, ev.Policy(1, 1, 1),
                                                       "m")))  # fmt: skip
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["auction_id"] == "sec-warm", 120)
        # The worker folds: from now, an auction four minutes out (inside the Kafka tick horizon)
        # whose every bid extends it by five minutes.
        start = now_ms()
        ends = start + 240_000
        policy = ev.Policy(soft_close_window_ms=600_000, extension_ms=300_000, max_extension_ms=3_600_000)
        await produce(offers, record(ev.AuctionStarted("sec-1", start, ends, policy, "maker-1")))
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["auction_id"] == "sec-1", 30)

        _, base = stack.start_gateway("gateway", None, **principal_env(kafka, USERS["gateway"]))
        async with aiohttp.ClientSession() as session:
            socket = Recorder(await session.ws_connect(base.replace("http", "ws") + "/auctions/sec-1/updates"))
            socket.start()
            await eventually(lambda: asyncio.sleep(0, result=socket.of_type("snapshot")), 10, "the snapshot")
            placed = now_ms()
            await produce(bids, record(ev.BidPlaced("sec-1", "b-1", "bidder-1", "10", placed)))
            [extended] = await eventually(lambda: asyncio.sleep(0, result=socket.of_type("extended")), 30, "extended")
            assert (extended["version"], extended["ends_at_ms"]) == (2, placed + 300_000)
            await eventually(lambda: asyncio.sleep(0, result=socket.of_type("tick")), 30, "a tick on the socket")

            # A forged ExpireTimer of the current version, due at once: the broker refuses it from
            # an upstream principal and from the gateway's.
            forged = record(ev.ExpireTimer("sec-1", 2, extended["ends_at_ms"]), event_id=f"forged-{uuid.uuid4().hex}")
            for producer in (offers, bids, gateway_producer):
                with pytest.raises(TopicAuthorizationFailedError):
                    await producer.send_and_wait(forged.topic, forged.value, key=forged.key)
            # The auction does not end: it takes the next bid as a running auction, and nothing of
            # the forgery reached the log (the worker's own commands are the only ones there).
            again = now_ms()
            await produce(bids, record(ev.BidPlaced("sec-1", "b-2", "bidder-2", "11", again)))
            await eventually(lambda: asyncio.sleep(0, result=len(socket.of_type("extended")) == 2), 30, "extended")
            timer = await (await session.get(f"{base}/auctions/sec-1/timer")).json()
            assert (timer["status"], timer["version"]) == ("running", 3)
            assert not socket.of_type("completed")
            forged_id = orjson.loads(forged.value)["id"]
            assert all(d["id"] != forged_id for d in watch.docs(topics.COMMANDS))
            assert all(d["data"]["cause"]["id"] != forged_id for d in watch.docs(topics.AUDIT))
            await socket.stop()
    finally:
        await watch.stop()
        for producer in (offers, bids, gateway_producer):
            await producer.stop()

    # Replay, as its read-only principal (with SCRAM-SHA-256), agrees with the table and Redis.
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    try:

        async def projected() -> bool:
            table = await read_table(kafka.bootstrap, APP_ID, **kafka.admin_options())
            return not await mismatches(client, Keys(key_prefix), table)

        await eventually(projected, 60, "the projection caught up with the table")
    finally:
        await client.aclose()
    env = stack.env(**principal_env(kafka, USERS["replay"], mechanism="SCRAM-SHA-256"))
    verified = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "app.cli", "replay", "--verify"],
        env=env, capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert verified.returncode == 0, verified.stdout + verified.stderr

    # A gateway with a wrong password starts, says Kafka refused it, and is not ready on Kafka.
    wrong = ScramUser(USERS["gateway"].name, "wrong-secret-91d0")
    port = free_port()
    proc = stack.start("gateway-wrong", ["gateway"], AUCTION_TIMER_GATEWAY_PORT=str(port),
                       **principal_env(kafka, wrong))  # fmt: skip
    await eventually(lambda: asyncio.sleep(0, result="Authentication failed" in proc.log_path.read_text()), 60,
                     "the refused credentials logged")  # fmt: skip
    async with aiohttp.ClientSession() as session:

        async def readiness() -> dict[str, bool]:
            return dict(await (await session.get(f"http://127.0.0.1:{port}/readyz")).json())

        assert (await eventually(readiness, 30, "the wrong gateway's /readyz"))["kafka"] is False

    # No password of anyone's is in any log: the service's processes', replay's, or the broker's.
    logs = verified.stdout + verified.stderr + "".join(p.log_path.read_text() for p in stack.processes)
    logs += "".join(path.read_text(errors="replace") for path in kafka.base_dir.rglob("*.log"))
    assert [secret for secret in (*SECRETS, wrong.password) if secret in logs] == []
