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
REDELIVERED = Counter(
    "auctions_timer_redelivered_total", "Inputs delivered again after a crash and recognised as applied already"
)
COMMANDS_SENT = Counter("auctions_timer_commands_sent_total", "Scheduler commands written", ["command"])
DELIVERY_FAILURES = Counter(
    "auctions_timer_delivery_failures_total",
    "Records Kafka did not acknowledge (their input is held and they are sent again), by topic and kind",
    ["topic", "kind"],
)
REFETCHES = Counter(
    "auctions_timer_refetches_total",
    "Input batches that began past where their partition was received (the consumer skipped records):"
    " the partition is fetched again from there",
)
HELD_INPUTS = Gauge("auctions_timer_held_inputs", "Input records buffered until the log's order allows folding them")
WATERMARK_LAG = Gauge(
    "auctions_timer_watermark_lag_ms",
    "How far behind the log this worker's folding is: now minus the newest log time it folded or knows caught up",
    ["partition"],
)
LATE_BIDS = Counter("auctions_timer_late_bids_total", "Bids placed before the end that the log took after it")
SEND_FAILURES = Counter(
    "auctions_timer_scheduler_send_failures_total", "Scheduler commands and ticks Kafka did not acknowledge", ["what"]
)
CHANGE_TICKS_DROPPED = Counter(
    "auctions_timer_change_ticks_dropped_total",
    "Ticks of a change left unsent because MAX_PENDING_CHANGE_TICKS newer ones were waiting (a backlog)",
)
HELD_GROUPS = Gauge(
    "auctions_timer_held_partitions",
    "Input partitions whose folding is held because Kafka has not yet acknowledged what they caused",
)
FORGETS_ASKED = Counter(
    "auctions_timer_forgets_asked_total", "Ended auctions (and markers) the retention sweeper asked to remove"
)
