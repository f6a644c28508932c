"""The worker against real Kafka: registration, ticks, soft close, completion, duplicates,
cancellation, and bad input dead-lettered while good input keeps flowing."""

from __future__ import annotations

import itertools

import orjson

from streams import events as ev
from streams import topics
from tests.support.contracts import check_asyncapi
from tests.support.events import now_ms, raw_event, record
from tests.support.kafka import kafka_io, produce
from tests.support.stack import Stack

WATCH = (topics.TIMER_EVENTS, topics.TICKS, topics.AUDIT, topics.ANALYTICS, topics.DLQ, topics.COMMANDS)
POLICY = ev.Policy(soft_close_window_ms=2_000, extension_ms=3_000, max_extension_ms=60_000)


def of(auction_id: str, kind: str | None = None):
    def match(doc: dict) -> bool:
        data = doc.get("data", {})
        return data.get("auction_id") == auction_id and (kind is None or data.get("kind") == kind)

    return match


async def test_lifecycle_ticks_extension_and_completion(stack: Stack) -> None:
    """Registration, ticks, a soft-close extension and one completion, checked by exact values from
    the records. Times are derived from the worker's readiness with room to spare: the bid is in the
    window whenever it arrives before the (20 s away) end, and the outcome is read from its log time."""
    stack.start_worker()
    policy = ev.Policy(soft_close_window_ms=60_000, extension_ms=25_000, max_extension_ms=60_000)
    async with kafka_io(stack.kafka.bootstrap, *WATCH) as (producer, watch):
        await produce(producer, record(ev.AuctionStarted("warm-1", now_ms(), now_ms() + 600_000, POLICY, "m")))
        await watch.wait_for(topics.TIMER_EVENTS, of("warm-1", "registered"), timeout=60)
        start = now_ms()  # the worker is ready: it just folded a registration
        end = start + 20_000
        await produce(producer, record(ev.AuctionStarted("life-1", start, end, policy, "maker-1")))
        [registered] = await watch.wait_for(topics.TIMER_EVENTS, of("life-1", "registered"), timeout=30)
        assert registered["id"] == "life-1:v1"
        assert registered["data"]["ends_at_ms"] == end

        def life_started(doc: dict) -> bool:
            return doc["event"] == "auction_timer_started" and doc["properties"]["auction_id"] == "life-1"

        [started] = await watch.wait_for(topics.ANALYTICS, life_started, 10)
        assert started["properties"]["trace_id"] == registered["data"]["trace_id"]

        # Ticks carry the whole state and the server clock; periodic ones never come early (interval 1 s)
        # and never more than 15 s apart (the product's promise).
        ticks = await watch.wait_for(topics.TICKS, of("life-1"), timeout=30, count=4)
        stamps = [t["data"]["server_time_ms"] for t in ticks]
        assert all(900 <= b - a <= 15_000 for a, b in itertools.pairwise(stamps[1:])), stamps
        assert [t["data"]["seq"] for t in ticks] == sorted({t["data"]["seq"] for t in ticks})
        for tick in ticks:
            assert tick["data"]["remaining_ms"] == end - tick["data"]["server_time_ms"]

        bid = record(ev.BidPlaced("life-1", "bid-1", "bidder-1", "99.00", now_ms()))
        meta = await producer.send_and_wait(bid.topic, bid.value, key=bid.key)
        placed = orjson.loads(bid.value)["data"]["placed_at_ms"]
        assert meta.timestamp < end, "the bid reached the log after a 20 s deadline: the machine stalled"
        [extended] = await watch.wait_for(topics.TIMER_EVENTS, of("life-1", "extended"), timeout=30)
        assert extended["data"]["ends_at_ms"] == placed + 25_000
        assert extended["data"]["previous_ends_at_ms"] == end
        assert extended["data"]["server_time_ms"] == meta.timestamp  # the change is dated by the log
        # A tick goes out with the change itself (version 2), not only at the next interval.
        await watch.wait_for(topics.TICKS, lambda d: of("life-1")(d) and d["data"]["version"] == 2, 10)

        [completed] = await watch.wait_for(topics.TIMER_EVENTS, of("life-1", "completed"), timeout=90)
        assert completed["id"] == "life-1:completed"
        assert completed["data"]["status"] == "ended"
        assert completed["data"]["ended_at_ms"] >= placed + 25_000  # never before the extended end
        assert len(watch.docs(topics.TIMER_EVENTS, of("life-1", "completed"))) == 1

        # Everything published matches docs/asyncapi.yaml.
        [expire, *_] = watch.docs(topics.COMMANDS, lambda d: d["type"] == "com.marketplace.timer.expire")
        check_asyncapi("ExpireTimer", expire)
        for doc in (registered, extended, completed):
            check_asyncapi("TimerEvent", doc)
        for doc in ticks:
            check_asyncapi("TimerTick", doc)
        for doc in watch.docs(topics.AUDIT, of("life-1")):
            check_asyncapi("AuditEntry", doc)
        for doc in watch.docs(topics.ANALYTICS):
            check_asyncapi("SegmentTrack", doc)


async def test_duplicates_are_no_ops_and_cancel_ends_the_timer(stack: Stack) -> None:
    stack.start_worker()
    async with kafka_io(stack.kafka.bootstrap, *WATCH) as (producer, watch):
        start = now_ms()
        first = record(ev.AuctionStarted("dup-1", start, start + 60_000, POLICY, "maker-1"), event_id="start-dup-1")
        same_times = record(ev.AuctionStarted("dup-1", start, start + 60_000, POLICY, "maker-1"))
        await produce(producer, first, first, same_times)
        await watch.wait_for(topics.AUDIT, lambda d: of("dup-1")(d) and d["data"]["action"] == "duplicate", 60, count=2)
        # One registration: the same-id resend may re-publish it (at-least-once), with the same id
        # and version, which consumers drop; the other duplicate publishes nothing.
        registered = watch.docs(topics.TIMER_EVENTS, of("dup-1", "registered"))
        assert {(d["id"], d["data"]["version"]) for d in registered} == {("dup-1:v1", 1)}
        assert len(registered) <= 2
        reasons = sorted(
            d["data"]["reason"] for d in watch.docs(topics.AUDIT, of("dup-1")) if d["data"]["action"] == "duplicate"
        )
        assert reasons == ["event_id_seen", "same_registration"]

        await produce(producer, record(ev.AuctionCancelled("dup-1", "listing withdrawn", "admin-1")))
        [cancelled] = await watch.wait_for(topics.TIMER_EVENTS, of("dup-1", "cancelled"), timeout=10)
        assert cancelled["id"] == "dup-1:cancelled"
        assert (cancelled["data"]["status"], cancelled["data"]["version"]) == ("cancelled", 2)
        final_tick = await watch.wait_for(
            topics.TICKS, lambda d: of("dup-1")(d) and d["data"]["status"] == "cancelled", 10
        )
        assert final_tick[0]["data"]["remaining_ms"] == 0


async def test_bad_input_is_dead_lettered_while_valid_events_flow(stack: Stack) -> None:
    stack.start_worker()
    async with kafka_io(stack.kafka.bootstrap, *WATCH) as (producer, watch):
        start = now_ms()
        over_cap = raw_event(
            ev.AUCTION_STARTED,
            {"auction_id": "cap-1", "starts_at_ms": start, "ends_at_ms": start + 10_000, "maker_id": "m",
             "policy": {"soft_close_window_ms": 1, "extension_ms": 16 * 60_000, "max_extension_ms": 1}},
        )  # fmt: skip
        await producer.send_and_wait(topics.AUCTION_STARTED, b"{{{ not json", key=b"junk-1")
        await producer.send_and_wait(topics.AUCTION_STARTED, over_cap, key=b"cap-1")
        await producer.send_and_wait(topics.BID_PLACED, b"x" * 70_000, key=b"big-1")
        await produce(producer, record(ev.BidPlaced("ghost-1", "b1", "u1", "5", start)))
        await produce(producer, record(ev.AuctionStarted("good-1", start, start + 60_000, POLICY, "maker-1")))

        dead = await watch.wait_for(topics.DLQ, lambda d: True, timeout=60, count=4)
        by_key = {d["data"]["key"]: d["data"] for d in dead}
        assert by_key["junk-1"]["reason"] == "not_json"
        assert by_key["cap-1"]["reason"] == "policy_over_cap"
        assert by_key["cap-1"]["field"] == "data.policy.extension_ms"
        assert by_key["big-1"]["reason"] == "oversized" and by_key["big-1"]["truncated"] is True
        assert by_key["ghost-1"]["reason"] == "unknown_auction"
        assert orjson.loads(by_key["cap-1"]["value"])["data"]["auction_id"] == "cap-1"
        for doc in dead:
            check_asyncapi("DeadLetter", doc)
        await watch.wait_for(topics.TIMER_EVENTS, of("good-1", "registered"), timeout=10)
        assert stack.processes[0].running()
