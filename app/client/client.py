"""TimerClient: follows auctions' countdowns over one gateway WebSocket (/updates), as an async
iterator of events. It follows the auctions it is given, or every running auction
(`all_running`: the listing GET /auctions, again every `relist_interval_s`, up to
WS_MAX_SUBSCRIPTIONS' default of 500).

Connection states: `live` (socket open), `reconnecting` (socket lost, retrying with
exponential backoff and full jitter), `polling` (still down after RECONNECTING_S, or the
gateway said its feed is interrupted: GET every tick interval until the socket is back).
The time shown always comes from ends_at and the server-clock estimate (one for all the
auctions), never from counting ticks; the rules live in app.client.countdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson

from app.client import countdown as cd
from streams.state import LIVE

log = logging.getLogger("auction_timer.client")
RECONNECTING_S = 3.0
BASE_BACKOFF_S = 0.25
MAX_BACKOFF_S = 10.0
FIRST_PINGS = 3
CLOSE_WAIT_S = 5.0  # how long closing waits for the client's tasks to finish
MAX_FOLLOWED = 500  # the listing's largest page, and the gateway's default cap per socket


@dataclass(frozen=True)
class ConnectionChanged:
    state: str  # connecting, live, reconnecting, polling


@dataclass(frozen=True)
class Updated:
    auction_id: str
    version: int
    status: str
    ends_at_ms: int
    remaining_ms: int


@dataclass(frozen=True)
class Resynced:
    auction_id: str
    drift_ms: int
    version: int


Event = ConnectionChanged | Updated | cd.Extended | cd.Ended | cd.DriftWarning | Resynced


def monotonic_ms() -> float:
    return time.monotonic() * 1000


class TimerClient:
    def __init__(
        self,
        base_url: str,
        auctions: Sequence[str] = (),
        *,
        all_running: bool = False,
        ping_interval_s: float = 5.0,
        relist_interval_s: float = 10.0,
        clock: Callable[[], float] = monotonic_ms,
        rng: random.Random | None = None,
    ) -> None:
        if not auctions and not all_running:
            raise ValueError("name the auctions to follow, or all_running")
        self.base_url = base_url.rstrip("/")
        self.all_running = all_running
        self.ping_interval_s = ping_interval_s
        self.relist_interval_s = relist_interval_s
        self.clock = cd.ServerClock(clock)
        self.countdowns: dict[str, cd.Countdown] = {a: cd.Countdown(self.clock) for a in dict.fromkeys(auctions)}
        self.rng = rng or random.Random()
        self.state = "connecting"
        self.polls = 0
        self.tick_interval_s = 1.0
        self._queue: asyncio.Queue[Event] = asyncio.Queue()
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._poller: asyncio.Task[None] | None = None

    def remaining_ms(self, auction_id: str) -> int | None:
        countdown = self.countdowns.get(auction_id)
        return None if countdown is None else countdown.remaining_ms()

    def all_ended(self) -> bool:
        return all(self._ended(c) for c in self.countdowns.values())

    def states(self) -> list[dict[str, Any]]:
        """The state of every auction followed that has one, ending soonest first."""
        known = [c.state for c in self.countdowns.values() if c.state is not None]
        return sorted(known, key=lambda s: (s["ends_at_ms"], s["auction_id"]))

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
                # Bounded, and never swallowing our own cancellation (Ctrl-C): a CI run's `watch`
                # did not stop on Ctrl-C when a cleanup like this one swallowed it.
                await asyncio.wait(tasks, timeout=CLOSE_WAIT_S)

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

    def _updated(self, countdown: cd.Countdown) -> None:
        state, remaining = countdown.state, countdown.remaining_ms()
        if state is not None and remaining is not None:
            self._emit(Updated(state["auction_id"], state["version"], state["status"], state["ends_at_ms"], remaining))

    def _carry_out(self, auction_id: str, outputs: list[cd.Output]) -> None:
        for out in outputs:
            if isinstance(out, (cd.Extended, cd.Ended, cd.DriftWarning)):
                self._emit(out)
            elif isinstance(out, cd.Sync):
                self._spawn(self._sync(auction_id))
            elif isinstance(out, cd.Rehydrate):
                self._spawn(self.rehydrate(auction_id))

    # -- the socket ------------------------------------------------------------------------------

    async def _run(self) -> None:
        attempt = 0
        url = f"{self.base_url.replace('http', 'ws', 1)}/updates"
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
        self._ws = ws
        background = [asyncio.create_task(self._ping(ws))]
        if self.all_running:
            background.append(asyncio.create_task(self._relist_every()))
        try:
            await self._subscribe(list(self.countdowns))
            async for msg in ws:
                if msg.type == aiohttp.WSMsgType.TEXT:
                    self._handle(orjson.loads(msg.data), self.clock.now())
        finally:
            self._ws = None
            for task in background:
                task.cancel()
            # asyncio.wait, not `await task` under suppress(CancelledError): that would also swallow
            # the cancellation of this task (the client closing), which then reconnected forever.
            await asyncio.wait(background)
            await ws.close()

    async def _subscribe(self, auction_ids: list[str]) -> None:
        if auction_ids and self._ws is not None:
            await self._ws.send_str(orjson.dumps({"type": "subscribe", "auctions": auction_ids}).decode())

    async def _ping(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """A few pings at once for a first estimate, then one every ping interval."""
        for n in itertools.count():
            await ws.send_str(orjson.dumps({"type": "ping", "client_time_ms": self.clock.now()}).decode())
            await asyncio.sleep(0.2 if n < FIRST_PINGS else self.ping_interval_s)

    async def _relist_every(self) -> None:
        while True:
            await self.relist()
            await asyncio.sleep(self.relist_interval_s)

    def _handle(self, message: dict[str, Any], received: float) -> None:
        kind = message.get("type")
        if kind == "pong":
            self.clock.sample(message["client_time_ms"], message["server_time_ms"], received)
            return
        if kind == "feed":
            if message["status"] == "interrupted":
                self._set_state("polling")
                self._start_polling(after_s=0)
            else:
                self._stop_polling()
                self._set_state("live")
                self._spawn(self._poll_once())
            return
        if kind == "error":
            log.warning("the gateway refused a request: %s", message)
            if message.get("code") == "rate_limited":
                self._spawn(self._subscribe_later(message["retry_after_ms"] / 1000))
            return
        countdown = self.countdowns.get(str(message.get("auction_id")))
        if countdown is None:
            return  # unsubscribed, or not ours
        if kind == "snapshot":
            self.tick_interval_s = message["tick_interval_ms"] / 1000
        self._carry_out(str(message["auction_id"]), countdown.on_message(message, received))
        self._updated(countdown)

    async def _subscribe_later(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        await self._subscribe(list(self.countdowns))

    # -- REST ------------------------------------------------------------------------------------

    async def _get(self, path: str) -> tuple[dict[str, Any], float, float] | None:
        """GET a JSON body; with when it was sent and received, or None when the gateway did not answer."""
        sent = self.clock.now()
        try:
            async with self.session.get(f"{self.base_url}{path}") as response:
                if response.status != 200:
                    return None
                body = await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return None
        return body, sent, self.clock.now()

    async def rehydrate(self, auction_id: str) -> bool:
        """GET one timer: a clock sample and the state. False when the gateway did not answer."""
        countdown = self.countdowns.get(auction_id)
        got = await self._get(f"/auctions/{auction_id}/timer")
        if countdown is None or got is None:
            return False
        body, sent, received = got
        self.tick_interval_s = body["tick_interval_ms"] / 1000
        self._carry_out(auction_id, countdown.hydrate(body, sent, received))
        self._updated(countdown)
        return True

    async def relist(self) -> bool:
        """The running auctions (all_running): new ones are followed and subscribed; one no longer
        listed has ended (rehydrated, to say how) or fell beyond the first MAX_FOLLOWED."""
        got = await self._get(f"/auctions?status=running&limit={MAX_FOLLOWED}")
        if got is None:
            return False
        body, sent, received = got
        self.clock.sample(sent, body["server_time_ms"], received)
        self.tick_interval_s = body["tick_interval_ms"] / 1000
        listed = {state["auction_id"]: state for state in body["auctions"]}
        fresh = [a for a in listed if a not in self.countdowns]
        for auction_id, state in listed.items():
            countdown = self.countdowns.setdefault(auction_id, cd.Countdown(self.clock))
            self._carry_out(auction_id, countdown.apply_state(state))
            self._updated(countdown)
        await self._subscribe(fresh)
        # Ended ones were reported on an earlier round: forgotten now. One no longer listed that
        # we still think live: ended meanwhile (say so) or fell beyond the first page (forget it).
        await self._forget([a for a, c in self.countdowns.items() if a not in listed and self._ended(c)])
        for auction_id in [a for a in self.countdowns if a not in listed]:
            if not await self.rehydrate(auction_id) or not self._ended(self.countdowns[auction_id]):
                await self._forget([auction_id])
        return True

    @staticmethod
    def _ended(countdown: cd.Countdown) -> bool:
        return countdown.state is not None and countdown.state["status"] not in LIVE

    async def _forget(self, auction_ids: list[str]) -> None:
        for auction_id in auction_ids:
            self.countdowns.pop(auction_id, None)
        if auction_ids and self._ws is not None:
            await self._ws.send_str(orjson.dumps({"type": "unsubscribe", "auctions": auction_ids}).decode())

    async def _poll_once(self) -> None:
        if self.all_running:
            await self.relist()
        else:
            for auction_id in list(self.countdowns):
                await self.rehydrate(auction_id)

    async def _sync(self, auction_id: str) -> None:
        countdown = self.countdowns.get(auction_id)
        if countdown is None or countdown.state is None:
            return
        sent = self.clock.now()
        body = {
            "auction_id": auction_id,
            "client_remaining_ms": countdown.remaining_ms() or 0,
            "version": countdown.state["version"],
            "client_time_ms": int(sent),
        }
        try:
            async with self.session.post(f"{self.base_url}/timers/sync", json=body) as response:
                if response.status != 200:
                    return
                answer = await response.json()
        except (aiohttp.ClientError, OSError, TimeoutError):
            return
        self._carry_out(auction_id, countdown.hydrate(answer, sent, self.clock.now()))
        self._emit(Resynced(auction_id, answer["drift_ms"], answer["version"]))
        self._updated(countdown)

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
            await self._poll_once()
            await asyncio.sleep(self.tick_interval_s)
