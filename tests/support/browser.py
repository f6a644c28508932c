"""Driving Debian's Chromium with Playwright: the launch, a page-side Date ten minutes wrong."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from playwright.async_api import Browser, Page, async_playwright

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip
SKEW_DATE = """
(() => {
  const skew = 10 * 60 * 1000, RealDate = Date;
  class SkewedDate extends RealDate {
    constructor(...args) { super(...(args.length ? args : [RealDate.now() + skew])); }
    static now() { return RealDate.now() + skew; }
  }
  window.Date = SkewedDate;
})();
"""


@asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        launched = await pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        try:
            yield launched
        finally:
            await launched.close()


async def js(page: Page, expression: str) -> Any:
    return await page.evaluate(expression)
