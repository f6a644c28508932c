"""Retention of ended auctions: the sweeper finds ended timers (and markers) past the retention
in the partitions this worker owns and asks for their removal through the log (ForgetTimer), so
that the fold, and any replay, removes them at the same point of the log.

A sweep reads the stored bytes only as far as it must: the status (first in the JSON), then the
version and end time by pattern, without decoding whole states, so a million ended auctions
cost seconds of a sweep, not a decode each.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Any

from streams import events as ev
from streams import outputs
from streams.clock import Clock
from streams.metrics import FORGETS_ASKED
from streams.scheduler import checked
from streams.state import EXPIRED_PREFIX, decode_expired, stored_live
from streams.tracing import derived_traceparent

log = logging.getLogger("auction_timer.retention")
SOURCE = "urn:auction-timer:retention"
_VERSION = re.compile(rb'"version":([0-9]+)')
_ENDED = re.compile(rb'"ended_at_ms":([0-9]+)')
_UPDATED = re.compile(rb'"updated_at_ms":([0-9]+)')
CHUNK = 2_000  # stored entries read between two yields to the event loop


def due_for_removal(items: Iterable[tuple[bytes, bytes]], now_ms: int, retention_ms: int) -> Iterator[tuple[str, int]]:
    """(auction_id, version) of every ended timer or marker whose retention has passed by `now_ms`."""
    for key, raw in items:
        if key.startswith(EXPIRED_PREFIX):
            marker = decode_expired(raw)
            if marker.forgotten_at_ms + retention_ms <= now_ms:
                yield marker.auction_id, marker.version
            continue
        if stored_live(raw):
            continue
        version, ended = _VERSION.search(raw), _ENDED.search(raw) or _UPDATED.search(raw)
        if version is not None and ended is not None and int(ended.group(1)) + retention_ms <= now_ms:
            yield key.decode(), int(version.group(1))


class Sweeper:
    def __init__(
        self,
        items: Callable[[], Iterable[tuple[bytes, bytes]]],
        send_command: Callable[[outputs.Record], Awaitable[asyncio.Future[Any]]],
        retention_ms: int,
        clock: Clock,
    ) -> None:
        self.items = items
        self.send_command = send_command
        self.retention_ms = retention_ms
        self.clock = clock
        self.interval_s = min(max(retention_ms / 4_000, 1.0), 900.0)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            try:
                await self.sweep()
            except Exception:  # a store read failing must not stop retention for good
                log.exception("retention sweep failed; the next one retries")

    async def sweep(self) -> int:
        now = self.clock()
        asked = 0
        chunk: list[tuple[bytes, bytes]] = []
        for item in self.items():
            chunk.append(item)
            if len(chunk) == CHUNK:
                asked += await self._ask(chunk, now)
                chunk = []
                await asyncio.sleep(0)  # a sweep of a million entries must not stall deadlines
        asked += await self._ask(chunk, now)
        if asked:
            FORGETS_ASKED.inc(asked)
            log.info("asked to remove auctions past their retention", extra={"auctions": asked})
        return asked

    async def _ask(self, chunk: list[tuple[bytes, bytes]], now: int) -> int:
        asked = 0
        for auction_id, version in due_for_removal(chunk, now, self.retention_ms):
            command_id = f"{auction_id}:forget:v{version}:{uuid.uuid4().hex[:12]}"
            traceparent = derived_traceparent(command_id)
            record = outputs.input_record(
                ev.ForgetTimer(auction_id, version, now), command_id, now, traceparent, SOURCE
            )
            checked(await self.send_command(record), "forget")
            asked += 1
        return asked
