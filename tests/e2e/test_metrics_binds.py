"""Metrics are for the operator's network: the worker's port binds 127.0.0.1 unless told
otherwise, and the gateway can serve /metrics on a port of its own instead of its public one."""

from __future__ import annotations

import asyncio

import aiohttp

from infra.ports import free_port
from tests.support.raw_ws import listening_on
from tests.support.stack import Stack
from tests.support.waiting import eventually


async def test_worker_metrics_bind_localhost_and_gateway_metrics_move_to_their_own_port(stack: Stack) -> None:
    worker_port, gateway_metrics_port = free_port(), free_port()
    stack.start_worker(AUCTION_TIMER_WORKER_METRICS_PORT=str(worker_port))
    _, base = stack.start_gateway(AUCTION_TIMER_GATEWAY_METRICS_PORT=str(gateway_metrics_port))
    await eventually(lambda: asyncio.sleep(0, result=listening_on(worker_port)), 60, "the worker's metrics port")
    assert listening_on(worker_port) == ["127.0.0.1"]  # was 0.0.0.0 unless --local-metrics
    assert listening_on(gateway_metrics_port) == ["127.0.0.1"]
    async with aiohttp.ClientSession() as session:
        moved = await session.get(f"http://127.0.0.1:{gateway_metrics_port}/metrics")
        assert moved.status == 200 and "auctions_gateway_ws_connections" in await moved.text()
        assert (await session.get(f"{base}/metrics")).status == 404  # no longer on the public port
        worker = await session.get(f"http://127.0.0.1:{worker_port}/metrics")
        assert "auctions_timer_worker_ready" in await worker.text()

    # Where the operator wants it, though.
    other_port = free_port()
    stack.start_worker("worker-2", AUCTION_TIMER_WORKER_METRICS_PORT=str(other_port),
                       AUCTION_TIMER_WORKER_METRICS_HOST="0.0.0.0")  # fmt: skip
    await eventually(lambda: asyncio.sleep(0, result=listening_on(other_port)), 60, "the second worker's port")
    assert listening_on(other_port) == ["0.0.0.0"]


async def test_a_gateway_on_a_public_address_warns_that_its_metrics_are_public(stack: Stack) -> None:
    gateway, _ = stack.start_gateway(AUCTION_TIMER_GATEWAY_HOST="0.0.0.0")
    assert "/metrics is served on the gateway's public address" in gateway.log_path.read_text()
