"""Topic names (fixed by the contract) and which event type each input topic carries."""

from __future__ import annotations

AUCTION_STARTED = "offers.auction.started"
BID_PLACED = "auctions.bids.placed"
AUCTION_CANCELLED = "offers.auction.cancelled"
COMMANDS = "auctions.timer.commands"
TICKS = "auctions.timer.ticks"
TIMER_EVENTS = "auctions.timer.events"
AUDIT = "auctions.timer.audit"
ANALYTICS = "analytics.events"
DLQ = "auctions.timer.dlq"

UPSTREAM_TOPICS = (AUCTION_STARTED, BID_PLACED, AUCTION_CANCELLED)
# What the worker folds. The order breaks ties between records the log stamped with the same
# millisecond: a registration before a bid before a cancellation before a scheduler command.
INPUT_TOPICS = (*UPSTREAM_TOPICS, COMMANDS)
OUTPUT_TOPICS = (TICKS, TIMER_EVENTS, AUDIT, ANALYTICS, DLQ)
ALL_TOPICS = (*INPUT_TOPICS, *OUTPUT_TOPICS)

# Ticks are only worth their latest value; a day of them is plenty for debugging.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {
    TICKS: {"retention.ms": str(24 * 3600 * 1000)},
    DLQ: {"retention.ms": str(30 * 24 * 3600 * 1000)},
}
CHANGELOG_CONFIG = {"cleanup.policy": "compact"}  # the table keeps each auction's latest state


def changelog_topic(app_id: str) -> str:
    """The timer table's compacted changelog, named as Faust names it."""
    return f"{app_id}-timers-changelog"
