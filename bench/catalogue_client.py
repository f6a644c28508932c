"""One process of WebSocket clients for the catalogue fan-out benchmark.

`python -m bench.catalogue_client URL MODE SOCKETS SECONDS IDS` opens SOCKETS sockets: with MODE
`mux` each follows every auction in IDS (comma separated) over /updates; with `single` socket i
follows auction i mod len(IDS) over /auctions/{id}/updates. It prints "ready" once every socket
has its snapshots, waits for a line on stdin, records each tick's delivery latency (receive time
minus the tick's server time; same machine, same clock) for SECONDS, then prints one JSON line:
latencies as a histogram in whole milliseconds (mergeable across processes), gaps, deliveries."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter

import aiohttp
import orjson


async def main(url: str, mode: str, count: int, seconds: float, ids: list[str]) -> None:
    histogram: Counter[int] = Counter()
    gaps = 0
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        sockets: list[aiohttp.ClientWebSocketResponse] = []
        for start in range(0, count, 100):
            batch = range(start, min(start + 100, count))
            if mode == "mux":
                opened = await asyncio.gather(*(session.ws_connect(f"{url}/updates") for _ in batch))
                subscribe = orjson.dumps({"type": "subscribe", "auctions": ids}).decode()
                await asyncio.gather(*(ws.send_str(subscribe) for ws in opened))
            else:
                urls = [f"{url}/auctions/{ids[i % len(ids)]}/updates" for i in batch]
                opened = await asyncio.gather(*(session.ws_connect(u) for u in urls))
            for ws in opened:  # a wave's snapshots before the next wave (the gateway's Redis pool is 100)
                for _ in range(len(ids) if mode == "mux" else 1):
                    while orjson.loads((await ws.receive()).data)["type"] != "snapshot":
                        pass
            sockets += opened
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        stop_at = time.time() + seconds

        async def read(ws: aiohttp.ClientWebSocketResponse) -> None:
            nonlocal gaps
            last: dict[str, int] = {}
            while time.time() < stop_at:
                try:
                    msg = await ws.receive(timeout=max(0.1, stop_at - time.time()))
                except TimeoutError:
                    break
                if msg.type != aiohttp.WSMsgType.TEXT:
                    break
                now = time.time() * 1000
                data = orjson.loads(msg.data)
                if data.get("type") == "tick" and now < stop_at * 1000:
                    histogram[int(now - data["server_time_ms"])] += 1
                    seq, previous = data["seq"], last.get(data["auction_id"])
                    gaps += previous is not None and seq != previous + 1
                    last[data["auction_id"]] = seq

        await asyncio.gather(*(read(ws) for ws in sockets))
        await asyncio.gather(*(ws.close() for ws in sockets))
    print(orjson.dumps({"histogram": histogram, "gaps": gaps}, option=orjson.OPT_NON_STR_KEYS).decode(), flush=True)


if __name__ == "__main__":
    base, mode, sockets_, seconds_, ids_ = sys.argv[1:6]
    asyncio.run(main(base.replace("http", "ws", 1), mode, int(sockets_), float(seconds_), ids_.split(",")))
