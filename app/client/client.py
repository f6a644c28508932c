"""TimerClient: follows one auction's countdown over the gateway, as an async iterator of events.

Connection states: `live` (socket open), `reconnecting` (socket lost, retrying with
exponential backoff and full jitter), `polling` (still down after RECONNECTING_S, or the
gateway said its feed is interrupted: GET every tick interval until the socket is back).
The time shown always comes from ends_at and the server-clock estimate, never from
counting ticks; the rules live in app.client.countdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from app.client import countdown as cd

log = logging.getLogger("auction_timer.client")
RECONNECTING_S = 3.0
BASE_BACKOFF_S = 0.25
MAX_BACKOFF_S = 10.0
FIRST_PINGS = 3


@dataclass(frozen=True)
class ConnectionChanged:
    state: str  # connecting, live, reconnecting, polling


@dataclass(frozen=True)
class Updated:
    version: int
    status: str
    ends_at_ms: int
    remaining_ms: int


@dataclass(frozen=True)
class Resynced:
    drift_ms: int
    version: int


Event = ConnectionChanged | Updated | cd.Extended | cd.Ended | cd.DriftWarning | Resynced


def monotonic_ms() -> float:
    return time.monotonic() * 1000


class TimerClient:
    def __init__(
        self,
        base_url: str,
        auction_id: str,
        *,
        ping_interval_s: float = 5.0,
        clock: Callable[[], float] = monotonic_ms,
        rng: random.Random | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.auction_id = auction_id
        self.ping_interval_s = ping_interval_s
        self.clock = clock
        self.countdown = cd.Countdown(clock)
        self.rng = rng or random.Random()
        self.state = "connecting"
        self.polls = 0
        self.tick_interval_s = 1.0
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None

    def remaining_ms(self) -> int | None:
        return self.countdown.remaining_ms()

    async def events(self) -> AsyncIterator[Event]:
        """Run the connection and yield what happens, for as long as the caller iterates."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            self._session = session
            runner = asyncio.create_task(self._run())
            try:
                while True:
                    getter = asyncio.ensure_future(self._queue.get())
                    await asyncio.wait({getter, runner}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        runner.result()  # the runner only stops by raising: surface it
                    yield getter.result()
            finally:
                tasks = [runner, *self._tasks, *([self._poller] if self._poller else [])]
                for task in tasks:
                    task.cancel()
                for task in tasks:
                    with contextlib.suppress(asyncio.CancelledError, Exception):
                        await task

    # -- plumbing --------------------------------------------------------------------------------

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "iterate events() to connect"
        return self._session

    def _emit(self, event: Event) -> None:
        self._queue.put_nowait(event)

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _set_state(self, state: str) -> None:
        if state != self.state:
            self.state = state
            self._emit(ConnectionChanged(state))

    def _updated(self) -> None:
        state, remaining = self.countdown.state, self.countdown.remaining_ms()
        if state is not None and remaining is not None:
            self._emit(Updated(state["version"], state["status"], state["ends_at_ms"], remaining))

    def _carry_out(self, outputs: list[cd.Output]) -> None:
        for out in outputs:
            if isinstance(out, (cd.Extended, cd.Ended, cd.DriftWarning)):
                self._emit(out)
            elif isinstance(out, cd.Sync):
                self._spawn(self._sync())
            elif isinstance(out, cd.Rehydrate):
                self._spawn(self.rehydrate())

    # -- the socket ------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        url = f"{self.base_url.replace('http', 'ws', 1)}/auctions/{self.auction_id}/updates"
        while True:
            try:
                ws = await self.session.ws_connect(url, heartbeat=15)
            except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                log.debug("connect failed: %r", exc)
            else:
                attempt = 0
                self._stop_polling()
                self._set_state("live")
                with contextlib.suppress(aiohttp.ClientError, OSError, TimeoutError):
                    await self._follow(ws)
            if self.state in ("connecting", "live"):
                self._set_state("reconnecting")
            self._start_polling(after_s=RECONNECTING_S)
            await asyncio.sleep(self.rng.uniform(0, min(MAX_BACKOFF_S, BASE_BACKOFF_S * 2**attempt)))
            attempt += 1

    async def _follow(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        pinger = asyncio.create_task(self._ping(ws))
        try:
            await self.rehydrate()
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._handle(orjson.loads(msg.data), self.clock())
        finally:
            pinger.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pinger
            await ws.close()

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A few pings at once for a first estimate, then one every ping interval."""
        for n in itertools.count():
            await ws.send_str(orjson.dumps({"type": "ping", "client_time_ms": self.clock()}).decode())
            await asyncio.sleep(0.2 if n < FIRST_PINGS else self.ping_interval_s)

    def _handle(self, message: dict[str, Any], received: float) -> None:
        kind = message.get("type")
        if kind == "pong":
            self.countdown.sample(message["client_time_ms"], message["server_time_ms"], received)
            return
        if kind == "feed":
            if message["status"] == "interrupted":
                self._set_state("polling")
                self._start_polling(after_s=0)
            else:
                self._stop_polling()
                self._set_state("live")
                self._spawn(self.rehydrate())
            return
        if kind == "snapshot":
            self.tick_interval_s = message["tick_interval_ms"] / 1000
        self._carry_out(self.countdown.on_message(message, received))
        self._updated()

    # -- REST ------------------------------------------------------------------------------------

    async def rehydrate(self) -> bool:
        """GET the timer: a clock sample and the state. False when the gateway did not answer."""
        sent = self.clock()
        try:
            async with self.session.get(f"{self.base_url}/auctions/{self.auction_id}/timer") as response:
                if response.status != 200:
                    return False
                body = await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return False
        self.tick_interval_s = body["tick_interval_ms"] / 1000
        self._carry_out(self.countdown.hydrate(body, sent, self.clock()))
        self._updated()
        return True

    async def _sync(self) -> None:
        state = self.countdown.state or {}
        sent = self.clock()
        body = {
            "auction_id": self.auction_id,
            "client_remaining_ms": self.countdown.remaining_ms() or 0,
            "version": state.get("version", 0),
            "client_time_ms": int(sent),
        }
        try:
            async with self.session.post(f"{self.base_url}/timers/sync", json=body) as response:
                if response.status != 200:
                    return
                answer = await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return
        self._carry_out(self.countdown.hydrate(answer, sent, self.clock()))
        self._emit(Resynced(answer["drift_ms"], answer["version"]))
        self._updated()

    def _start_polling(self, after_s: float) -> None:
        if self._poller is None or self._poller.done():
            self._poller = asyncio.create_task(self._poll(after_s))

    def _stop_polling(self) -> None:
        if self._poller is not None:
            self._poller.cancel()
            self._poller = None

    async def _poll(self, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self._set_state("polling")
        while True:
            self.polls += 1
            await self.rehydrate()
            await asyncio.sleep(self.tick_interval_s)
