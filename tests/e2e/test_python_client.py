"""The Python client against the live stack: an auction followed to its end through an
extension, and a gateway restart survived without a wrong value on the way."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.parse

from app.client import countdown as cd
from app.client.client import ConnectionChanged, TimerClient, Updated
from streams import events as ev
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce
from tests.support.stack import Stack
from tests.support.waiting import eventually

SAMPLE_EVERY_S = 0.1  # how often the shown time is compared with the truth
POLICY = ev.Policy(soft_close_window_ms=2_000, extension_ms=3_000, max_extension_ms=60_000)


async def test_follows_an_auction_through_an_extension_to_its_end(stack: Stack) -> None:
    stack.start_worker()
    _, base = stack.start_gateway()
    start = now_ms()
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        await produce(producer, record(ev.AuctionStarted("py-1", start, start + 6_000, POLICY, "maker-1")))
        client = TimerClient(base, "py-1", ping_interval_s=1)
        seen: list[object] = []
        errors: list[float] = []
        truth_end = start + 6_000
        bid_sent = False
        async with asyncio.timeout(40):
            async for event in client.events():
                seen.append(event)
                remaining = client.remaining_ms()
                if isinstance(event, Updated) and remaining is not None and event.status == "running":
                    errors.append(abs(remaining - (truth_end - now_ms())))
                    if not bid_sent and now_ms() >= start + 4_500:
                        bid_sent = True
                        await produce(producer, record(ev.BidPlaced("py-1", "b-1", "u-1", "9", now_ms())))
                if isinstance(event, cd.Extended):
                    truth_end = event.ends_at_ms
                if isinstance(event, cd.Ended):
                    break
    kinds = [type(e).__name__ for e in seen]
    assert "Extended" in kinds and kinds[-1] == "Ended"
    assert kinds.index("Extended") < kinds.index("Ended")
    assert ConnectionChanged("live") in seen
    print(f"python client vs truth over {len(errors)} updates: max error {max(errors):.0f} ms")
    assert max(errors) <= 100


async def test_survives_a_gateway_restart_polling_while_it_is_down(stack: Stack) -> None:
    stack.start_worker()
    gateway, base = stack.start_gateway()
    ends = now_ms() + 300_000
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        await produce(producer, record(ev.AuctionStarted("py-2", now_ms(), ends, POLICY, "maker-1")))
    client = TimerClient(base, "py-2", ping_interval_s=1)
    states: list[str] = []
    errors: list[float] = []

    async def follow() -> None:
        async for event in client.events():
            if isinstance(event, ConnectionChanged):
                states.append(event.state)

    async def measure() -> None:
        while True:
            remaining = client.remaining_ms()
            if remaining is not None:
                errors.append(remaining - (ends - now_ms()))
            await asyncio.sleep(SAMPLE_EVERY_S)

    follower, meter = asyncio.create_task(follow()), asyncio.create_task(measure())
    try:
        await eventually(lambda: asyncio.sleep(0, result=client.state == "live" and client.remaining_ms()), 30, "live")
        gateway.stop()
        await eventually(lambda: asyncio.sleep(0, result=client.state == "polling"), 15, "polling")
        polls_while_down = client.polls
        await eventually(lambda: asyncio.sleep(0, result=client.polls >= polls_while_down + 2), 10, "more polls")
        stack.start_gateway(port=urllib.parse.urlparse(base).port)
        await eventually(lambda: asyncio.sleep(0, result=client.state == "live"), 30, "live again")
        await eventually(lambda: asyncio.sleep(0, result=len(errors) > 50), 10, "measurements")
    finally:
        for task in (follower, meter):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    assert states[:1] == ["live"]
    assert states[-3:] == ["reconnecting", "polling", "live"]
    print(f"through the restart: {len(errors)} samples, worst error {max(map(abs, errors)):.0f} ms")
    assert max(map(abs, errors)) <= 250
