"""The Python client against the live stack: an auction followed to its end through an
extension, and a gateway restart survived without a wrong value on the way."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import signal
import sys
import urllib.parse
from collections.abc import Awaitable

import aiohttp

from app.client import countdown as cd
from app.client.client import ConnectionChanged, Resynced, TimerClient, Updated, monotonic_ms
from app.client.watch import watch
from streams import events as ev
from streams import topics
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce, produce_bid_placed_at, worker_folding
from tests.support.stack import ROOT, Stack
from tests.support.waiting import eventually

SAMPLE_EVERY_S = 0.1  # how often the shown time is compared with the truth
POLICY = ev.Policy(soft_close_window_ms=2_000, extension_ms=3_000, max_extension_ms=60_000)
ENDS_IN_MS = 8_000


def allowed_error_ms(client: TimerClient, bar_ms: float) -> float:
    """`bar_ms` plus half the slowest round trip the client's clock estimate rests on: the clock
    cannot be known better than that, and a loaded machine makes some round trips slow."""
    return bar_ms + client.clock.estimator.worst_rtt / 2


async def test_follows_an_auction_through_an_extension_to_its_end(stack: Stack) -> None:
    stack.start_worker()
    _, base = stack.start_gateway()
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch_log):
        await worker_folding(producer, watch_log)
        client = TimerClient(base, ["py-1"], ping_interval_s=1)
        seen: list[object] = []
        errors: list[tuple[float, float]] = []  # (error, allowed)
        truth_end = ends = placed = 0
        bidding: asyncio.Task[None] | None = None
        async with asyncio.timeout(120):
            async for event in client.events():
                seen.append(event)
                if event == ConnectionChanged("live") and not ends:
                    # Times counted from a live client and a folding worker; a bid at the start of
                    # the soft-close window has the window (and a lead) to reach the log.
                    start = now_ms()
                    truth_end = ends = start + ENDS_IN_MS
                    await produce(producer, record(ev.AuctionStarted("py-1", start, ends, POLICY, "maker-1")))
                    placed = ends - POLICY.soft_close_window_ms
                    bidding = asyncio.create_task(produce_bid_placed_at(producer, "py-1", placed))
                remaining = client.remaining_ms("py-1")
                if isinstance(event, Updated) and remaining is not None and event.status == "running":
                    errors.append((abs(remaining - (truth_end - now_ms())), allowed_error_ms(client, 100)))
                if isinstance(event, cd.Extended):
                    truth_end = event.ends_at_ms
                if isinstance(event, cd.Ended):
                    break
    assert bidding is not None and bidding.done()
    kinds = [type(e).__name__ for e in seen]
    assert "Extended" in kinds and kinds[-1] == "Ended"
    assert kinds.index("Extended") < kinds.index("Ended")
    assert truth_end == placed + 3_000
    assert ConnectionChanged("live") in seen
    print(f"python client vs truth over {len(errors)} updates: max error {max(e for e, _ in errors):.0f} ms")
    assert all(error <= allowed for error, allowed in errors), errors


async def test_survives_a_gateway_restart_polling_while_it_is_down(stack: Stack) -> None:
    stack.start_worker()
    gateway, base = stack.start_gateway()
    ends = now_ms() + 300_000
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        await produce(producer, record(ev.AuctionStarted("py-2", now_ms(), ends, POLICY, "maker-1")))
    client = TimerClient(base, ["py-2"], ping_interval_s=1)
    states: list[str] = []
    errors: list[tuple[float, float]] = []  # (error, allowed)

    async def follow() -> None:
        async for event in client.events():
            if isinstance(event, ConnectionChanged):
                states.append(event.state)

    async def measure() -> None:
        while True:
            remaining = client.remaining_ms("py-2")
            if remaining is not None:
                errors.append((remaining - (ends - now_ms()), allowed_error_ms(client, 250)))
            await asyncio.sleep(SAMPLE_EVERY_S)

    follower, meter = asyncio.create_task(follow()), asyncio.create_task(measure())
    try:
        await eventually(
            lambda: asyncio.sleep(0, result=client.state == "live" and client.remaining_ms("py-2")), 60, "live"
        )
        gateway.stop()
        await eventually(lambda: asyncio.sleep(0, result=client.state == "polling"), 30, "polling")
        polls_while_down = client.polls
        await eventually(lambda: asyncio.sleep(0, result=client.polls >= polls_while_down + 2), 30, "more polls")
        stack.start_gateway(port=urllib.parse.urlparse(base).port)
        await eventually(lambda: asyncio.sleep(0, result=client.state == "live"), 60, "live again")
        measured = len(errors)
        await eventually(lambda: asyncio.sleep(0, result=len(errors) > measured + 20), 30, "measurements when live")
    finally:
        for task in (follower, meter):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert states[:1] == ["live"]
    assert states[-3:] == ["reconnecting", "polling", "live"]
    print(f"through the restart: {len(errors)} samples, worst error {max(abs(e) for e, _ in errors):.0f} ms")
    assert all(abs(error) <= allowed for error, allowed in errors), errors


async def connections(base: str) -> float:
    async with aiohttp.ClientSession() as session:
        text = await (await session.get(f"{base}/metrics")).text()
    [line] = [line for line in text.splitlines() if line.startswith("auctions_gateway_ws_connections ")]
    return float(line.split()[-1])


async def test_follows_several_auctions_over_one_connection(stack: Stack) -> None:
    stack.start_worker()
    _, base = stack.start_gateway()
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch_log):
        await worker_folding(producer, watch_log)  # the deadlines are counted from a folding worker
        start = now_ms()
        truth = {"py-a": start + ENDS_IN_MS, "py-b": start + ENDS_IN_MS + 1_000, "py-c": start + ENDS_IN_MS + 2_000}
        await produce(producer, *(record(ev.AuctionStarted(a, start, e, POLICY, "maker-1")) for a, e in truth.items()))
        client = TimerClient(base, list(truth), ping_interval_s=1)
        seen: list[object] = []
        errors: list[tuple[float, float]] = []  # (error, allowed)
        sockets: set[float] = set()
        placed = truth["py-b"] - POLICY.soft_close_window_ms  # the start of py-b's soft-close window
        bidding = asyncio.create_task(produce_bid_placed_at(producer, "py-b", placed))
        async with asyncio.timeout(120):
            async for event in client.events():
                seen.append(event)
                if isinstance(event, Updated) and event.status == "running":
                    remaining = client.remaining_ms(event.auction_id)
                    assert remaining is not None
                    errors.append(
                        (abs(remaining - (truth[event.auction_id] - now_ms())), allowed_error_ms(client, 100))
                    )
                    if len(sockets) < 3:
                        sockets.add(await connections(base))
                if isinstance(event, cd.Extended):
                    truth[event.auction_id] = event.ends_at_ms
                # The client's states may all read "ended" before the last Ended event is taken
                # from its queue (two auctions ended 8 ms apart once): wait for every event.
                ended = {e.auction_id for e in seen if isinstance(e, cd.Ended)}
                if isinstance(event, cd.Ended) and ended == set(truth):
                    break
    assert bidding.done()
    assert sockets == {1.0}  # one WebSocket for the three
    assert [(e.auction_id, e.ends_at_ms) for e in seen if isinstance(e, cd.Extended)] == [("py-b", placed + 3_000)]
    assert sorted(e.auction_id for e in seen if isinstance(e, cd.Ended)) == ["py-a", "py-b", "py-c"]
    print(f"three auctions over one socket: max error {max(e for e, _ in errors):.0f} ms over {len(errors)} updates")
    assert all(error <= allowed for error, allowed in errors), errors


async def test_follows_every_running_auction_as_they_come_and_go(stack: Stack) -> None:
    stack.start_worker()
    _, base = stack.start_gateway()
    start = now_ms()
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        await produce(producer, record(ev.AuctionStarted("all-1", start, start + 300_000, POLICY, "m")))
        await produce(producer, record(ev.AuctionStarted("all-2", start, start + 200_000, POLICY, "m")))
        client = TimerClient(base, all_running=True, ping_interval_s=1, relist_interval_s=0.5)
        follower = asyncio.create_task(_drain(client))
        try:

            def following(*ids: str) -> Awaitable[bool]:
                return asyncio.sleep(0, result=[s["auction_id"] for s in client.states()] == list(ids))

            await eventually(lambda: following("all-2", "all-1"), 30, "the running auctions, soonest first")
            await produce(producer, record(ev.AuctionStarted("all-3", now_ms(), now_ms() + 100_000, POLICY, "m")))
            await eventually(lambda: following("all-3", "all-2", "all-1"), 30, "a new auction followed")
            await produce(producer, record(ev.AuctionCancelled("all-2", "withdrawn", "admin")))
            await eventually(lambda: following("all-3", "all-1"), 30, "the cancelled auction gone")
            assert await connections(base) == 1.0
        finally:
            follower.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await follower


async def _drain(client: TimerClient) -> None:
    async for _ in client.events():
        pass


async def test_watch_all_draws_a_board_of_running_auctions(stack: Stack) -> None:
    stack.start_worker()
    _, base = stack.start_gateway()
    start = now_ms()
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        for i, minutes in enumerate((9, 3, 6)):
            ends = start + minutes * 60_000
            await produce(producer, record(ev.AuctionStarted(f"board-{i}", start, ends, POLICY, "m")))
    # Ctrl-C as a terminal sends it, even when this test runs where SIGINT is ignored (a job
    # started with `&` without job control ignores it, and so do its children: a CI harness did).
    watcher = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "app.cli", "watch", "--all", "--url", base,
        stdout=asyncio.subprocess.PIPE, env=stack.env(), cwd=ROOT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    assert watcher.stdout is not None
    board: list[str] = []
    shown: list[str] = []  # everything it printed, for the failure message
    try:
        async with asyncio.timeout(120):
            while not (board[:1] == ["3 running  [live]"] and len(board) == 5):
                line = (await watcher.stdout.readline()).decode()
                assert line, f"watch --all stopped: {shown[-20:]}"
                shown.append(line.rstrip("\n"))
                board = [] if not line.strip() else [*board, line.rstrip("\n")]
    except TimeoutError:
        raise AssertionError(f"no board of the three auctions within 120 s; it printed: {shown[-20:]}") from None
    finally:
        watcher.send_signal(signal.SIGINT)
        try:
            code = await asyncio.wait_for(watcher.wait(), 15)
        except TimeoutError:
            watcher.kill()
            await watcher.wait()
            raise AssertionError("watch --all did not stop on Ctrl-C within 15 s") from None
    assert [row.split()[0] for row in board[2:]] == ["board-1", "board-2", "board-0"], board  # soonest first
    # A loaded machine may slow a round trip enough for a drift note; the layout is what counts.
    note = r"( +(drift|resynced \(drift) [+-]\d+ ms\)?)?"
    assert all(re.fullmatch(r"\S+ +\d\d:\d\d:\d\d +v1" + note, row) for row in board[2:]), board
    assert code == 130


async def test_watch_follows_named_auctions_until_they_end(stack: Stack) -> None:
    stack.start_worker()
    _, base = stack.start_gateway()
    start = now_ms()
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        for auction_id, seconds in (("w-1", 4), ("w-2", 5), ("w-3", 4)):
            await produce(producer, record(ev.AuctionStarted(auction_id, start, start + seconds * 1000, POLICY, "m")))
    several, one = io.StringIO(), io.StringIO()
    async with asyncio.timeout(40):
        codes = await asyncio.gather(watch(base, ["w-1", "w-2"], out=several), watch(base, ["w-3"], out=one))
    assert list(codes) == [0, 0]
    *_, last_board = several.getvalue().strip().split("\n\n")
    heading, _columns, *board_rows = last_board.splitlines()
    assert heading == "0 running  [live]"
    assert [row.split() for row in board_rows] == [["w-1", "00.0s", "v2", "ended"], ["w-2", "00.0s", "v2", "ended"]]
    assert one.getvalue().splitlines()[-1] == "w-3  00.0s  [live]  v2  ended"


async def test_a_jump_of_the_clients_clock_is_warned_corrected_and_resynced(stack: Stack) -> None:
    """The client's monotonic clock jumps 900 ms ahead: the next tick proves it wrong (a drift
    warning), the display is corrected at once, and the client asks POST /timers/sync."""
    stack.start_worker()
    _, base = stack.start_gateway()
    jump = {"ms": 0.0}
    client = TimerClient(base, ["py-4"], ping_interval_s=1, clock=lambda: monotonic_ms() + jump["ms"])
    ends = now_ms() + 300_000
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        await produce(producer, record(ev.AuctionStarted("py-4", now_ms(), ends, POLICY, "maker-1")))
    seen: list[object] = []

    async def follow() -> None:
        async for event in client.events():
            seen.append(event)

    follower = asyncio.create_task(follow())
    try:
        await eventually(
            lambda: asyncio.sleep(0, result=client.state == "live" and client.remaining_ms("py-4")), 60, "live"
        )
        jump["ms"] = 900.0  # the display now shows 900 ms too little
        [resynced] = await eventually(
            lambda: asyncio.sleep(0, result=[e for e in seen if isinstance(e, Resynced)]), 60, "a resync"
        )
        remaining = client.remaining_ms("py-4")
        error = abs((remaining or 0) - (ends - now_ms()))
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
    [warning] = [e for e in seen if isinstance(e, cd.DriftWarning)][:1]
    assert 500 < warning.drift_ms <= 900 + allowed_error_ms(client, 0)  # ahead: too little shown
    # Corrected before the sync was sent, so the server found (almost) nothing left to correct.
    assert abs(resynced.drift_ms) <= allowed_error_ms(client, 100), resynced
    assert error <= allowed_error_ms(client, 100), error
