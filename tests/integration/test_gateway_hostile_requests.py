"""Every HTTP handler is total: whatever the request, a 4xx with a JSON body, never a 5xx
(issue 13, defects 2 and 6). In-process against real Kafka and Redis."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from app.gateway.server import build_gateway_app
from app.settings import Settings
from infra.kafka_server import KafkaCluster
from infra.redis_server import RedisServer
from streams.topic_admin import ensure_topics
from tests.support.contracts import check_openapi
from tests.support.gateway import gateway_settings

GOOD = b'{"auction_id": "a", "client_remaining_ms": 5, "version": 1, "client_time_ms": 1}'


@pytest.fixture
async def settings(kafka_module: KafkaCluster, redis_server: RedisServer, key_prefix: str) -> Settings:
    s = gateway_settings(kafka_module.bootstrap, redis_server.url, key_prefix, sync_rate_per_min=100_000)
    await ensure_topics(s.topic_plan())
    return s


@pytest.fixture
async def client(aiohttp_client: Any, settings: Settings) -> TestClient:
    return await aiohttp_client(build_gateway_app(settings))


async def answered(response: Any, status: int) -> str:
    """The response is `status` with a JSON error body; returns its error code."""
    assert response.status == status, await response.text()
    body = await response.json()
    check_openapi("Error", body)
    return str(body["error"])


@pytest.mark.parametrize(
    "path",
    ["/auctions/A%0A/timer", "/auctions/A%0D%0A/timer", "/auctions/A%0A", "/auctions/A%0A/updates",
     "/auctions/%FF/timer", "/auctions/%00/timer", "/auctions/A%20/timer"],
)  # fmt: skip
async def test_an_id_with_a_trailing_newline_or_odd_bytes_is_a_400(client: TestClient, path: str) -> None:
    assert await answered(await client.get(path), 400) == "bad_request"


@pytest.mark.parametrize("auction_id", ["X\n", "X\r\n", "\nX", "X\x00"])
async def test_a_sync_for_an_id_with_a_newline_is_a_400(client: TestClient, auction_id: str) -> None:
    body = {"auction_id": auction_id, "client_remaining_ms": 5, "version": 1, "client_time_ms": 1}
    assert await answered(await client.post("/timers/sync", json=body), 400) == "bad_request"


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/json; charset=bogus", GOOD, 415),  # was a 500 (LookupError)
        ("application/json; charset=latin-1", GOOD, 415),
        ("text/plain", GOOD, 415),  # JSON only as JSON
        ("application/x-www-form-urlencoded", b"auction_id=a", 415),
        ("application/json", b"[" * 100_000 + b"]" * 100_000, 413),  # over the 4 KiB body limit
        ("application/json", b"[" * 2_000 + b"]" * 2_000, 400),  # was a 500 (RecursionError)
        ("application/json", b'{"a":' + b"[" * 1_100 + b"]" * 1_100 + b"}", 400),
        ("application/json", b"\xff\xfe{}", 400),
        ("application/json", b'{"auction_id": "a\\ud800"}', 400),  # a lone surrogate
        ("application/json", b"", 400),
        ("application/json; charset=UTF-8", GOOD.replace(b'"a"', b'"bad id"'), 400),
    ],
)
async def test_a_sync_body_of_any_shape_gets_a_4xx_json_answer(
    client: TestClient, content_type: str, body: bytes, status: int
) -> None:
    response = await client.post("/timers/sync", data=body, headers={"Content-Type": content_type})
    await answered(response, status)


async def test_other_methods_and_paths_answer_json(client: TestClient) -> None:
    assert await answered(await client.post("/auctions/a/timer", data=b"x"), 405) == "method_not_allowed"
    assert await answered(await client.get("/timers/sync"), 405) == "method_not_allowed"
    assert await answered(await client.get("/auctions/a/updates"), 400) == "bad_request"  # no upgrade
    assert await answered(await client.get("/static/..%2F..%2Fsettings.py"), 404) == "not_found"


async def test_a_bug_in_a_handler_answers_json_and_is_logged(
    client: TestClient, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def broken(*_: Any) -> None:
        raise RuntimeError("a bug in a handler")

    monkeypatch.setattr("app.gateway.rest.auction_id_of", broken)
    caplog.set_level(logging.ERROR, logger="auction_timer.gateway")
    assert await answered(await client.get("/auctions/a/timer"), 500) == "internal_error"
    [record] = [r for r in caplog.records if r.exc_info and "a bug in a handler" in str(r.exc_info[1])]
    assert record.getMessage() == "unhandled error answering a request"
