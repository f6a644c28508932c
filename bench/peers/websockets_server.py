"""Reference server for the fan-out benchmark: python-websockets' asyncio server and its
`broadcast()`, as its documentation shows them. Runs in a venv of its own (bench/venvs.py makes
it), so it imports nothing of the project.

`python websockets_server.py PORT STATE_JSON`: WebSockets at /auctions/{id}/updates get a
snapshot of STATE_JSON (with that id) on connect, then, once a second, every socket of each
auction gets the same tick (the gateway's message shape: the state, type, remaining_ms,
server_time_ms and the channel's seq), serialised once and handed to `broadcast()`. The
library pings every 20 s and drops a socket that has not answered within 20 s."""

import asyncio
import json
import re
import sys
import time

from websockets.asyncio.server import (  # type: ignore[import-not-found]  # its own venv, not the project's
    ServerConnection,
    broadcast,
    serve,
)

PATH = re.compile(r"/auctions/([A-Za-z0-9_.:-]{1,128})/updates")


class Channel:
    def __init__(self) -> None:
        self.seq = 0
        self.sockets: set[ServerConnection] = set()


def message(state: dict, kind: str, auction_id: str, seq: int, now: int) -> str:
    remaining = max(0, state["ends_at_ms"] - now)
    body = {"type": kind, **state, "auction_id": auction_id, "remaining_ms": remaining, "server_time_ms": now}
    return json.dumps({**body, "seq": seq}, separators=(",", ":"))


async def main(port: int, state: dict) -> None:
    channels: dict[str, Channel] = {}

    async def handler(ws: ServerConnection) -> None:
        match = PATH.fullmatch(ws.request.path)
        if match is None:
            await ws.close(1008, "unknown path")
            return
        auction_id = match.group(1)
        channel = channels.setdefault(auction_id, Channel())
        channel.sockets.add(ws)
        try:
            await ws.send(message(state, "snapshot", auction_id, channel.seq, int(time.time() * 1000)))
            await ws.wait_closed()
        finally:
            channel.sockets.discard(ws)

    async with serve(handler, "127.0.0.1", port, compression=None, max_size=4096, ping_interval=20, ping_timeout=20):
        print("listening", flush=True)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            next_at += 1.0
            await asyncio.sleep(max(0.0, next_at - loop.time()))
            now = int(time.time() * 1000)
            for auction_id, channel in channels.items():
                channel.seq += 1
                broadcast(channel.sockets, message(state, "tick", auction_id, channel.seq, now))


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1]), json.loads(sys.argv[2])))
