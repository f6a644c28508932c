"""`auction-timer watch AUCTION [AUCTION ...]` or `watch --all`: live countdowns in the terminal,
over one WebSocket. One auction is one line; several (or every running one, `--all`) are a board,
ending soonest first, with the connection state and what just happened to each."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Sequence
from typing import TextIO

from app.client import countdown as cd
from app.client.client import ConnectionChanged, Resynced, TimerClient
from streams.state import LIVE

CLEAR_BELOW = "\x1b[J"
HOME = "\x1b[H"


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


def board(client: TimerClient, notes: dict[str, str], height: int | None = None) -> list[str]:
    """The board's lines: a heading, then one row per auction, ending soonest first."""
    states = client.states()
    running = sum(1 for s in states if s["status"] in LIVE)
    lines = [f"{running} running  [{client.state}]", f"{'AUCTION':<24} {'LEFT':>12}  {'VERSION':>7}  NOTE"]
    for state in states:
        remaining = client.remaining_ms(state["auction_id"])
        shown = "--:--:--" if remaining is None else format_remaining(remaining)
        note = notes.get(state["auction_id"], "")
        lines.append(f"{state['auction_id']:<24} {shown:>12}  {'v' + str(state['version']):>7}  {note}".rstrip())
    return lines if height is None else lines[: max(3, height - 1)]


async def watch(base_url: str, auctions: Sequence[str], out: TextIO = sys.stdout, all_running: bool = False) -> int:
    """Show the countdowns until every named auction has ended (`--all`: until interrupted);
    returns the exit status."""
    client = TimerClient(base_url, auctions, all_running=all_running)
    tty = out.isatty()
    single = len(auctions) == 1 and not all_running
    notes: dict[str, str] = {}
    shape: object = None  # what the board showed last (non-tty output prints it when it changes)

    def line() -> str:
        [auction_id] = auctions
        remaining = client.remaining_ms(auction_id)
        version = (client.countdowns[auction_id].state or {}).get("version", "-")
        shown = "--:--:--" if remaining is None else format_remaining(remaining)
        return f"{auction_id}  {shown}  [{client.state}]  v{version}  {notes.get(auction_id, '')}".rstrip()

    def render(final: bool = False) -> None:
        nonlocal shape
        if single:
            out.write("\r\x1b[2K" + line() if tty and not final else line() + "\n")
        elif tty:
            rows = board(client, notes, shutil.get_terminal_size().lines)
            out.write(HOME + "".join(row + "\x1b[K\n" for row in rows) + CLEAR_BELOW)
        else:
            now = [(s["auction_id"], s["version"], s["status"]) for s in client.states()], client.state
            if now == shape:
                return
            shape = now
            out.write("\n".join(board(client, notes)) + "\n\n")
        out.flush()

    async def repaint() -> None:
        while True:
            render()
            await asyncio.sleep(0.1 if tty else 1.0)

    painter = asyncio.create_task(repaint())
    try:
        async for event in client.events():
            if isinstance(event, cd.Extended):
                notes[event.auction_id] = f"extended +{(event.ends_at_ms - event.previous_ends_at_ms) / 1000:.1f}s"
            elif isinstance(event, cd.DriftWarning):
                notes.update(dict.fromkeys(client.countdowns, f"drift {event.drift_ms:+.0f} ms"))
            elif isinstance(event, Resynced):
                notes[event.auction_id] = f"resynced (drift {event.drift_ms:+d} ms)"
            elif isinstance(event, ConnectionChanged) and single and not tty:
                render()
            elif isinstance(event, cd.Ended):
                notes[event.auction_id] = event.status
                if not all_running and client.all_ended():
                    render(final=True)
                    return 0
    finally:
        painter.cancel()
    return 1
