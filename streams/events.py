"""The event contracts: what arrives on the input topics, as frozen dataclasses.

Every message is a CloudEvents 1.0 envelope (structured mode, JSON) whose `data`
holds one of the payloads below. Instants are integer epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_EXTENSION_STEP_MS = 15 * 60 * 1000  # one extension moves the end by at most 15 minutes
MAX_EXTENSION_TOTAL_MS = 24 * 3600 * 1000  # all extensions together: at most 24 hours

# CloudEvents `type` of each input payload.
AUCTION_STARTED = "com.marketplace.auction.started"
BID_PLACED = "com.marketplace.bid.placed"
AUCTION_CANCELLED = "com.marketplace.auction.cancelled"
EXPIRE_TIMER = "com.marketplace.timer.expire"
START_TIMER = "com.marketplace.timer.start"
RECONCILE = "com.marketplace.timer.reconcile"
FORGET_TIMER = "com.marketplace.timer.forget"


@dataclass(frozen=True, slots=True)
class Policy:
    """Soft close: a bid in the last `soft_close_window_ms` pushes the end to bid + `extension_ms`,
    never past the original end + `max_extension_ms`."""

    soft_close_window_ms: int
    extension_ms: int
    max_extension_ms: int


@dataclass(frozen=True, slots=True)
class AuctionStarted:
    auction_id: str
    starts_at_ms: int
    ends_at_ms: int
    policy: Policy
    maker_id: str


@dataclass(frozen=True, slots=True)
class BidPlaced:
    auction_id: str
    bid_id: str
    bidder_id: str
    amount: str
    placed_at_ms: int


@dataclass(frozen=True, slots=True)
class AuctionCancelled:
    auction_id: str
    reason: str
    actor: str


@dataclass(frozen=True, slots=True)
class ExpireTimer:
    """The scheduler saw `version`'s deadline pass at `fired_at_ms`."""

    auction_id: str
    version: int
    fired_at_ms: int


@dataclass(frozen=True, slots=True)
class StartTimer:
    """The scheduler saw `version`'s start time pass at `fired_at_ms` (scheduled -> running)."""

    auction_id: str
    version: int
    fired_at_ms: int


@dataclass(frozen=True, slots=True)
class Reconcile:
    """Repair this auction's Redis projection now (asked by the gateway's sync endpoint)."""

    auction_id: str
    requested_by: str


@dataclass(frozen=True, slots=True)
class ForgetTimer:
    """The retention sweeper saw `version` of an ended auction (or its marker) pass its retention."""

    auction_id: str
    version: int
    fired_at_ms: int


Payload = AuctionStarted | BidPlaced | AuctionCancelled | ExpireTimer | StartTimer | Reconcile | ForgetTimer

TYPE_OF: dict[type, str] = {
    AuctionStarted: AUCTION_STARTED,
    BidPlaced: BID_PLACED,
    AuctionCancelled: AUCTION_CANCELLED,
    ExpireTimer: EXPIRE_TIMER,
    StartTimer: START_TIMER,
    Reconcile: RECONCILE,
    ForgetTimer: FORGET_TIMER,
}


@dataclass(frozen=True, slots=True)
class Envelope:
    """A decoded CloudEvent and where the log put it.

    `time_ms` is the producer's `time` (informational, bounded by the log time); `traceparent`
    is always valid (derived from the record's position when upstream sent none). `log_ms` is
    the record's broker timestamp (LogAppendTime on every input topic): the only clock the fold
    trusts. `topic_index` (the input topic's place in INPUT_TOPICS) and `offset` say where the
    record sits in its partition, so an input redelivered after a crash is recognised exactly."""

    id: str
    type: str
    source: str
    time_ms: int
    traceparent: str
    data: Payload
    log_ms: int
    topic_index: int = -1
    offset: int = -1

    @property
    def auction_id(self) -> str:
        return self.data.auction_id
