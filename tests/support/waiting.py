"""Waiting on a condition with a bounded timeout (never a bare sleep standing in for sync)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


async def eventually(probe: Callable[[], Awaitable[T]], timeout: float, what: str, interval: float = 0.05) -> T:
    """Await `probe()` until it returns something truthy; fail naming `what` after `timeout` s.
    Exceptions count as "not yet" (a server restarting refuses connections), and a probe that
    hangs is cut off at the deadline, so the failure names `what` rather than a test timeout."""
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            async with asyncio.timeout(max(deadline - time.monotonic(), interval)):
                result = await probe()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")
        await asyncio.sleep(interval)


def eventually_sync(probe: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    last_error: BaseException | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_error = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what} (last error: {last_error!r})")
        time.sleep(interval)
