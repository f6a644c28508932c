"""One process of WebSocket subscribers for the fan-out benchmark.

`python -m bench.fanout_client URL AUCTION SOCKETS SECONDS` opens SOCKETS sockets, prints
"ready", records each tick's delivery latency (receive time minus the tick's server time;
same machine, same clock) for SECONDS, then prints the latencies as one JSON line."""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import orjson


async def main(url: str, auction_id: str, count: int, seconds: float) -> None:
    latencies: list[float] = []
    gaps = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets = []
        for start in range(0, count, 200):
            sockets += await asyncio.gather(
                *(session.ws_connect(f"{url}/auctions/{auction_id}/updates") for _ in range(min(200, count - start)))
            )
        print("ready", flush=True)
        stop_at = time.time() + seconds

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal gaps
            last_seq = None
            while time.time() < stop_at:
                try:
                    msg = await ws.receive(timeout=max(0.1, stop_at - time.time()))
                except TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                now = time.time() * 1000
                data = orjson.loads(msg.data)
                if data.get("type") == "tick":
                    latencies.append(now - data["server_time_ms"])
                    if last_seq is not None and data["seq"] != last_seq + 1:
                        gaps += 1
                    last_seq = data["seq"]

        await asyncio.gather(*(read(ws) for ws in sockets))
        await asyncio.gather(*(ws.close() for ws in sockets))
    print(orjson.dumps({"latencies": latencies, "gaps": gaps}).decode(), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1].replace("http", "ws", 1), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
