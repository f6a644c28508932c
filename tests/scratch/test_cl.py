from streams import events as ev
from streams import topics
from streams.changelog import read_table
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce
from tests.support.stack import APP_ID, Stack
from tests.support.waiting import eventually

POLICY = ev.Policy(soft_close_window_ms=1_000, extension_ms=1_000, max_extension_ms=10_000)


async def test_changelog_has_all(stack: Stack) -> None:
    stack.start_worker("w1")
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        base = now_ms()
        ends = {f"pair-{i}": base + 60_000 + 300 * i for i in range(30)}
        await produce(producer, *(record(ev.AuctionStarted(a, base, e, POLICY, "m")) for a, e in ends.items()))
        await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "registered", 60, count=30)

        async def full():
            t = await read_table(stack.kafka.bootstrap, APP_ID)
            print(len(t))
            return len(t) == 30

        await eventually(full, 20, "30 in changelog")
