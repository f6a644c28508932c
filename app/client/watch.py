"""`auction-timer watch AUCTION`: a live countdown in the terminal, with connection and drift."""

from __future__ import annotations

import asyncio
import sys
from typing import TextIO

from app.client import countdown as cd
from app.client.client import ConnectionChanged, Resynced, TimerClient


def format_remaining(ms: int) -> str:
    """Days, hours, minutes, seconds; tenths in the last minute (as the page shows it)."""
    if ms < 60_000:
        return f"{ms // 1000:02d}.{ms % 1000 // 100}s"
    seconds = ms // 1000
    days, seconds = divmod(seconds, 86_400)
    hours, seconds = divmod(seconds, 3_600)
    minutes, seconds = divmod(seconds, 60)
    clock = f"{hours:02d}:{minutes:02d}:{seconds:02d}"
    return f"{days}d {clock}" if days else clock


async def watch(base_url: str, auction_id: str, out: TextIO = sys.stdout) -> int:
    """Print the countdown until the auction ends; returns the exit status."""
    client = TimerClient(base_url, auction_id)
    tty = out.isatty()
    note = ""

    def render(final: bool = False) -> None:
        remaining = client.remaining_ms()
        state = client.countdown.state or {}
        shown = "--:--:--" if remaining is None else format_remaining(remaining)
        line = f"{auction_id}  {shown}  [{client.state}]  v{state.get('version', '-')}  {note}".rstrip()
        if tty and not final:
            out.write("\r\x1b[2K" + line)
        else:
            out.write(line + "\n")
        out.flush()

    async def repaint() -> None:
        while True:
            render()
            await asyncio.sleep(0.1 if tty else 1.0)

    painter = asyncio.create_task(repaint())
    try:
        async for event in client.events():
            if isinstance(event, cd.Extended):
                note = f"extended +{(event.ends_at_ms - event.previous_ends_at_ms) / 1000:.1f}s"
            elif isinstance(event, cd.DriftWarning):
                note = f"drift {event.drift_ms:+.0f} ms"
            elif isinstance(event, Resynced):
                note = f"resynced (drift {event.drift_ms:+d} ms)"
            elif isinstance(event, ConnectionChanged) and not tty:
                render()
            elif isinstance(event, cd.Ended):
                note = event.status
                render(final=True)
                return 0
    finally:
        painter.cancel()
    return 1
