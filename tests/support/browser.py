"""Driving Debian's Chromium with Playwright: the launch, and pages whose device clock is wrong
and whose scripts' block coverage is counted (tests/support/jscoverage.py)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import Browser, CDPSession, Error, Page, async_playwright

from tests.support import jscoverage

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip
TEN_MINUTES_MS = 600_000
_counting: list[CDPSession] = []  # the coverage sessions of the pages new_page opened


def wrong_device_clock(skew_ms: int) -> str:
    """An init script that puts the device's wall clock `skew_ms` off, as the page's scripts see
    it: Date (new Date(), Date(), Date.now()) and performance.timeOrigin. performance.now() stays
    a monotonic clock, which is all the pages may use."""
    return f"""
(() => {{
  const skew = {skew_ms}, RealDate = Date, origin = performance.timeOrigin + skew;
  function SkewedDate(...args) {{
    if (!new.target) return new RealDate(RealDate.now() + skew).toString();
    return Reflect.construct(RealDate, args.length ? args : [RealDate.now() + skew], new.target);
  }}
  Object.setPrototypeOf(SkewedDate, RealDate);
  SkewedDate.prototype = RealDate.prototype;
  SkewedDate.now = () => RealDate.now() + skew;
  window.Date = SkewedDate;
  Object.defineProperty(performance, "timeOrigin", {{ get: () => origin }});
}})();
"""


async def new_page(browser: Browser, skew_ms: int, *scripts: str, **options: Any) -> Page:
    """A page whose device clock is `skew_ms` off, running `scripts` before its own, with its
    scripts' coverage counted from the start (saved when `chromium()` closes the browser)."""
    page = await browser.new_page(**options)
    _counting.append(await jscoverage.start(page))
    for script in (wrong_device_clock(skew_ms), *scripts):
        await page.add_init_script(script)
    return page


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            for session in _counting:
                with contextlib.suppress(Error):  # a page the test closed took its counts with it
                    await jscoverage.save(session)
            _counting.clear()
            await launched.close()


async def js(page: Page, expression: str) -> Any:
    return await page.evaluate(expression)


async def device_clock_is_off_by(page: Page, wall_clock: str, skew_ms: int) -> bool:
    """Does the page's `wall_clock` expression read this machine's clock plus `skew_ms`, at some
    instant between our two readings of it (give or take the millisecond Date rounds to)?"""
    before = time.time() * 1000
    read = await js(page, wall_clock)
    after = time.time() * 1000
    return bool(before - 1 <= read - skew_ms <= after + 1)
