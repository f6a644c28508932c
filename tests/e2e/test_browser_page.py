"""The countdown page in headless Chromium (Debian's, driven by Playwright) against the live stack."""

from __future__ import annotations

import re
import shutil
import time
import urllib.parse

from playwright.async_api import Browser, Page

from streams import events as ev
from streams import topics
from tests.support.browser import TEN_MINUTES_MS, device_clock_is_off_by, js, new_page
from tests.support.events import now_ms, record
from tests.support.kafka import kafka_io, produce, worker_folding
from tests.support.stack import ROOT, Stack
from tests.support.waiting import eventually

# A window longer than the test auctions: any bid extends to bid + 2 minutes.
POLICY = ev.Policy(soft_close_window_ms=600_000, extension_ms=120_000, max_extension_ms=600_000)
SAMPLE_EVERY_MS = 300  # the pace of the accuracy samples, not a synchronisation
LAST_MINUTE_MS = 20_000  # an auction short enough to watch to its end


async def open_countdown(browser: Browser, base: str, auction_id: str, skew_ms: int, *scripts: str) -> Page:
    """The countdown page with the device clock off by `skew_ms`, once it is live."""
    page = await new_page(browser, skew_ms, *scripts)
    await page.goto(f"{base}/auctions/{auction_id}")
    live = "auctionCountdown.connection() === 'live' && auctionCountdown.remainingMs() !== null"
    await eventually(lambda: js(page, live), 60, "the page to go live")
    assert await device_clock_is_off_by(page, "Date.now()", skew_ms)  # the skew is in place
    return page


async def remaining_error(page: Page, ends_at_ms: int) -> float:
    """How far the shown remaining time is from the truth (this machine's clock is the servers'
    clock). The page computed it at some instant between our two clock readings, however slow
    the round trip: the smallest error any such instant allows."""
    before = time.time() * 1000
    shown = await js(page, "auctionCountdown.remainingMs()")
    after = time.time() * 1000
    low, high = shown - (ends_at_ms - before), shown - (ends_at_ms - after)
    return 0.0 if low <= 0 <= high else min(low, high, key=abs)


async def register(stack: Stack, auction_id: str, ends_in_ms: int) -> int:
    ends = now_ms() + ends_in_ms
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        await produce(producer, record(ev.AuctionStarted(auction_id, now_ms() - 1_000, ends, POLICY, "maker-1")))
    return ends


async def test_page_shows_the_right_time_extensions_and_accessible_labels(stack: Stack, browser: Browser) -> None:
    stack.start_worker()
    _, base = stack.start_gateway()
    ends = await register(stack, "page-1", 90_000)
    page = await open_countdown(browser, base, "page-1", -TEN_MINUTES_MS)
    # Give the clock estimate its first pings, then compare with the truth a few times.
    await eventually(lambda: js(page, "auctionCountdown.offset() !== null"), 30, "a clock estimate")
    errors = []
    for _ in range(5):
        errors.append(await remaining_error(page, ends))
        await page.wait_for_timeout(SAMPLE_EVERY_MS)
    print(f"page vs truth: errors {[round(e) for e in errors]} ms")
    assert max(abs(e) for e in errors) <= 250

    text = await page.inner_text("#countdown")
    assert text.count(":") == 2  # 00:01:29 style above a minute

    # Accessibility: a timer role with a spoken label, a polite live region, status and alert roles.
    timer = page.locator("[role=timer]")
    assert (await timer.get_attribute("aria-label") or "").startswith("Time remaining:")
    assert await page.locator("#announcer").get_attribute("aria-live") == "polite"
    assert await page.locator("#pill").get_attribute("role") == "status"
    assert await page.locator("#drift-banner").get_attribute("role") == "alert"
    refresh = page.get_by_role("button", name="Refresh now")
    assert await refresh.is_visible()
    async with page.expect_response(lambda r: r.url == f"{base}/auctions/page-1/timer") as answered:
        await refresh.click()  # asks the gateway again at once
    assert (await answered.value).status == 200

    # An extension reaches the page with the exact new end (how fast is bench/fanout.py's business).
    async with kafka_io(stack.kafka.bootstrap) as (producer, _):
        placed = now_ms()
        await produce(producer, record(ev.BidPlaced("page-1", "b-1", "bidder-1", "25", placed)))
    sent = time.monotonic()
    await eventually(lambda: js(page, "auctionCountdown.state().version === 2"), 30, "the extension on the page")
    print(f"extension shown {(time.monotonic() - sent) * 1000:.0f} ms after the bid was produced")
    assert await js(page, "auctionCountdown.state().ends_at_ms") == placed + 120_000
    await eventually(lambda: page.locator("#announcer").inner_text(), 30, "the extension announcement")
    assert "Extended" in await page.locator("#announcer").inner_text()
    assert "1 (+" in await page.inner_text("#extensions")

    shot = ROOT / "tests" / "artifacts" / "countdown.png"
    shot.parent.mkdir(exist_ok=True)
    await page.screenshot(path=str(shot))
    shutil.copy(shot, ROOT / "docs" / "countdown.png")
    assert shot.stat().st_size > 5_000


async def test_pill_follows_the_gateway_down_and_back(stack: Stack, browser: Browser) -> None:
    stack.start_worker()
    gateway, base = stack.start_gateway()
    ends = await register(stack, "pill-1", 300_000)
    page = await open_countdown(browser, base, "pill-1", TEN_MINUTES_MS)
    gateway.stop()
    await eventually(lambda: js(page, "auctionCountdown.connection() === 'reconnecting'"), 30, "reconnecting")
    await eventually(lambda: js(page, "auctionCountdown.connection() === 'polling'"), 30, "polling")
    assert await page.inner_text("#pill") == "polling"
    await eventually(lambda: js(page, "auctionCountdown.polls >= 2"), 30, "polls while the gateway is down")
    assert abs(await remaining_error(page, ends)) <= 250  # still counting right while offline
    stack.start_gateway(port=urllib.parse.urlparse(base).port)
    await eventually(lambda: js(page, "auctionCountdown.connection() === 'live'"), 60, "live again")
    assert abs(await remaining_error(page, ends)) <= 250


async def test_a_wrong_device_clock_does_not_matter_and_forced_drift_is_caught(stack: Stack, browser: Browser) -> None:
    stack.start_worker()
    _, base = stack.start_gateway()
    ends = await register(stack, "skew-1", 120_000)
    page = await open_countdown(browser, base, "skew-1", TEN_MINUTES_MS)
    # Every wall clock the page could read is ten minutes ahead; the countdown is still right.
    for wall_clock in ("new Date().getTime()", "performance.timeOrigin + performance.now()"):
        assert await device_clock_is_off_by(page, wall_clock, TEN_MINUTES_MS), wall_clock
    assert 0 <= await js(page, "Date.now() - Date.parse(Date())") < 1_000  # Date() as a function too (whole seconds)
    await eventually(lambda: js(page, "auctionCountdown.offset() !== null"), 30, "a clock estimate")
    assert abs(await remaining_error(page, ends)) <= 250

    await js(page, "auctionCountdown.skewDisplay(900)")  # the display jumps 900 ms ahead
    await eventually(lambda: js(page, "!document.getElementById('drift-banner').hidden"), 30, "the drift banner")
    await eventually(lambda: js(page, "auctionCountdown.syncs >= 1"), 30, "a sync")
    banner = await page.inner_text("#drift-banner")
    assert "ms off" in banner
    assert "warning" in (await page.locator("#drift-badge").get_attribute("aria-label") or "")
    assert abs(await remaining_error(page, ends)) <= 250  # corrected


RECORD_TEXTS = """
window.__texts = { countdown: [], announcer: [] };
document.addEventListener("DOMContentLoaded", () => {
  for (const id of ["countdown", "announcer"]) {
    const el = document.getElementById(id);
    new MutationObserver(() => window.__texts[id].push(el.textContent))
      .observe(el, { childList: true, subtree: true, characterData: true });
  }
});
"""


async def test_the_last_minute_and_the_end(stack: Stack, browser: Browser) -> None:
    """An auction watched to its end: tenths of seconds in the last minute, then "Auction ended",
    announced, with nothing left on the clock."""
    stack.start_worker()
    _, base = stack.start_gateway()
    async with kafka_io(stack.kafka.bootstrap, topics.TIMER_EVENTS) as (producer, watch):
        await worker_folding(producer, watch)  # the deadline is counted from a folding worker
        ends = now_ms() + LAST_MINUTE_MS
        await produce(producer, record(ev.AuctionStarted("end-1", now_ms(), ends, POLICY, "maker-1")))
        page = await open_countdown(browser, base, "end-1", -TEN_MINUTES_MS, RECORD_TEXTS)
        await eventually(lambda: js(page, "!document.getElementById('ended').hidden"), 120, "the end on the page")
        [completed] = await watch.wait_for(topics.TIMER_EVENTS, lambda d: d["data"]["kind"] == "completed", 60)
    assert completed["data"]["auction_id"] == "end-1"
    assert await page.inner_text("#ended") == "Auction ended"
    assert await page.inner_text("#countdown") == "0:00:00.0"
    texts = await js(page, "window.__texts")
    assert any(re.fullmatch(r"0:00:[0-5]\d\.\d", t) for t in texts["countdown"]), texts["countdown"][-5:]
    assert texts["announcer"][-1] == "The auction has ended"
    label = "document.getElementById('countdown').getAttribute('aria-label') === 'Auction ended'"
    await eventually(lambda: js(page, label), 30, "the spoken label to say so (it is refreshed once a second)")
    print(f"announced: {texts['announcer']}")
