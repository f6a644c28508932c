"""Several gateway processes on one machine share one port with AUCTION_TIMER_GATEWAY_REUSE_PORT
(SO_REUSEPORT: the kernel spreads new connections over them), each serving its own sockets."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from infra.ports import free_port
from tests.support.stack import Stack
from tests.support.waiting import eventually

SOCKETS = 40  # all on one process by chance: 2 in 2^40


async def gauge(session: aiohttp.ClientSession, metrics_port: int, name: str) -> float:
    text = await (await session.get(f"http://127.0.0.1:{metrics_port}/metrics")).text()
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == name)


async def test_two_gateways_share_a_port_and_both_serve_sockets(stack: Stack) -> None:
    port, metrics = free_port(), [free_port(), free_port()]
    shared = {"AUCTION_TIMER_GATEWAY_REUSE_PORT": "true", "AUCTION_TIMER_WS_MAX_PER_ADDRESS": str(SOCKETS)}
    _, base = stack.start_gateway("gw-a", port=port, AUCTION_TIMER_GATEWAY_METRICS_PORT=str(metrics[0]), **shared)
    second = stack.start(
        "gw-b", ["gateway"], AUCTION_TIMER_GATEWAY_PORT=str(port), AUCTION_TIMER_GATEWAY_METRICS_PORT=str(metrics[1]),
        **shared,
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:

        async def second_ready() -> bool:
            assert second.running(), second.log_tail()
            return await gauge(session, metrics[1], "auctions_gateway_feed_up") == 1

        await eventually(second_ready, 60, "the second gateway's feed")
        sockets = [
            await session.ws_connect(f"{base.replace('http', 'ws', 1)}/auctions/shared/updates") for _ in range(SOCKETS)
        ]
        for ws in sockets:
            assert (await ws.receive_json(timeout=30))["type"] == "snapshot"
        open_on = [await gauge(session, m, "auctions_gateway_ws_connections") for m in metrics]
        assert sum(open_on) == SOCKETS
        assert all(n > 0 for n in open_on), open_on
        for ws in sockets:
            await ws.close()
