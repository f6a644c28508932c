"""The per-auction timer state the fold produces and the table stores."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from streams import json_bytes
from streams.events import Policy

Status = Literal["scheduled", "running", "ended", "cancelled"]
ChangeKind = Literal["registered", "started", "extended", "completed", "cancelled"]
LIVE: frozenset[str] = frozenset({"scheduled", "running"})
RECENT_KEYS = 8  # upstream event keys remembered against duplicates, newest last


@dataclass(frozen=True, slots=True)
class TimerState:
    # First, so that its JSON starts with the status: a restart finds the live timers among a
    # million stored states by their first bytes, without decoding the rest (`stored_live`).
    status: Status
    auction_id: str
    version: int  # +1 on every change, never otherwise
    starts_at_ms: int
    original_ends_at_ms: int
    ends_at_ms: int
    policy: Policy
    maker_id: str
    extension_count: int
    extension_total_ms: int
    traceparent: str  # of the input that made the latest change
    last_event_id: str  # the input that produced this version
    # Hashes of (source, type, id) of the upstream events that changed this timer, for duplicates.
    recent_keys: tuple[int, ...]
    # Where the input that made this version sits in the log's order (log time, topic rank,
    # offset). The worker folds an auction's inputs in that order and stores a version only after
    # everything before it was published, so an input ordered at or before it was folded already
    # (it is being delivered again after a crash) and must change and publish nothing.
    changed_by: tuple[int, int, int]
    updated_at_ms: int  # log time of the latest change
    last_change: ChangeKind
    ended_at_ms: int | None = None

    @property
    def live(self) -> bool:
        return self.status in LIVE

    @property
    def trace_id(self) -> str:
        return self.traceparent[3:35]

    def remaining_ms(self, now_ms: int) -> int:
        return max(0, self.ends_at_ms - now_ms) if self.live else 0

    def public(self) -> dict[str, Any]:
        """The fields clients see (no idempotency bookkeeping)."""
        return {
            "auction_id": self.auction_id,
            "version": self.version,
            "status": self.status,
            "starts_at_ms": self.starts_at_ms,
            "original_ends_at_ms": self.original_ends_at_ms,
            "ends_at_ms": self.ends_at_ms,
            "soft_close_window_ms": self.policy.soft_close_window_ms,
            "extension_ms": self.policy.extension_ms,
            "max_extension_ms": self.policy.max_extension_ms,
            "extension_count": self.extension_count,
            "extension_total_ms": self.extension_total_ms,
            "ended_at_ms": self.ended_at_ms,
            "trace_id": self.trace_id,
        }


LIVE_PREFIXES = tuple(f'{{"status":"{status}"'.encode() for status in sorted(LIVE))


def stored_live(raw: bytes) -> bool:
    """Is this encoded state a live timer? (Read off its first bytes; see TimerState.status.)"""
    return raw.startswith(LIVE_PREFIXES)


@dataclass(frozen=True, slots=True)
class Expired:
    """What stays of an auction after its retention: enough to tell a late bid it expired. Kept
    under `expired_key(auction_id)` for one more retention, then removed too."""

    status: Literal["expired"]
    auction_id: str
    version: int  # the state's last version
    ended_at_ms: int
    forgotten_at_ms: int


EXPIRED_PREFIX = b"\x00expired:"  # NUL cannot start an auction id: no marker key names an auction


def expired_key(key: bytes) -> bytes:
    return EXPIRED_PREFIX + key


def auction_key(key: bytes) -> bytes:
    """The auction id a table key belongs to (a marker's key names its auction after the prefix)."""
    return key.removeprefix(EXPIRED_PREFIX)


def encode_state(state: TimerState | Expired) -> bytes:
    # orjson writes dataclasses itself, field by field in declaration order: the same bytes as
    # dumps(asdict(state)) (tests/unit/test_state.py) at a fifth of the cost.
    return json_bytes.dumps(state)


@functools.lru_cache(maxsize=1_024)
def _policy(soft_close_window_ms: int, extension_ms: int, max_extension_ms: int) -> Policy:
    """One object per distinct policy (a marketplace has a few): not one per decoded state."""
    return Policy(soft_close_window_ms, extension_ms, max_extension_ms)


def decode_state(raw: bytes) -> TimerState:
    doc = orjson.loads(raw)
    doc["policy"] = _policy(**doc["policy"])
    doc["recent_keys"] = tuple(doc["recent_keys"])
    doc["changed_by"] = tuple(doc["changed_by"])
    return TimerState(**doc)


def decode_expired(raw: bytes) -> Expired:
    return Expired(**orjson.loads(raw))
