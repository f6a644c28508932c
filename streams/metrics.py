"""The worker's Prometheus metrics (Datadog maps `auctions_timer_x` to `auctions.timer.x`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

MS_BUCKETS = (1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000)

TICK_DELAY = Histogram(
    "auctions_timer_tick_delay_ms", "How late a tick left the scheduler after it was due (ms)", buckets=MS_BUCKETS
)
COMPLETION_LATENESS = Histogram(
    "auctions_timer_completion_lateness_ms",
    "Completion event time minus the auction's ends_at (ms)",
    buckets=MS_BUCKETS,
)
ACTIVE_TIMERS = Gauge("auctions_timer_active", "Live auctions this worker schedules")
EVENTS = Counter("auctions_timer_events_total", "Input messages folded", ["topic"])
TRANSITIONS = Counter("auctions_timer_transitions_total", "Timer state changes", ["kind"])
REJECTED = Counter("auctions_timer_rejected_events_total", "Inputs dead-lettered, by reason", ["reason"])
RETRIED = Counter(
    "auctions_timer_processing_retries_total", "Inputs held and retried because the table or Kafka failed"
)
COMMANDS_SENT = Counter("auctions_timer_commands_sent_total", "Scheduler commands written", ["command"])
