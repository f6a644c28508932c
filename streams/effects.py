"""What the fold asks the outer layer to do, as data. The fold never does I/O itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from streams.state import ChangeKind, TimerState


@dataclass(frozen=True, slots=True)
class TimerChanged:
    """A new version: publish it on auctions.timer.events and tick at once."""

    kind: ChangeKind
    state: TimerState
    cause_id: str
    cause_type: str
    previous_ends_at_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Audited:
    """One audit-log entry: a transition, a duplicate, an ignored or rejected input."""

    action: str
    auction_id: str
    version: int | None
    cause_id: str
    cause_type: str
    traceparent: str
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Tracked:
    """A Segment Track call for analytics.events."""

    event: str
    auction_id: str
    version: int
    traceparent: str
    properties: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Rejected:
    """The input could not be applied: dead-letter it with this reason."""

    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class ReconcileRequested:
    """Repair this auction's Redis projection from the table now."""

    auction_id: str
    requested_by: str


@dataclass(frozen=True, slots=True)
class Forgotten:
    """The ended auction's retention passed: remove its state (a changelog tombstone) and keep a
    marker, so that a late bid is told the auction expired rather than never existed."""

    auction_id: str
    version: int
    ended_at_ms: int
    forgotten_at_ms: int


Effect = TimerChanged | Audited | Tracked | Rejected | ReconcileRequested | Forgotten
