"""The gateway's Prometheus metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from streams.metrics import MS_BUCKETS

CONNECTIONS = Gauge("auctions_gateway_ws_connections", "Open WebSocket connections")
CONNECTS = Counter("auctions_gateway_ws_connects_total", "WebSocket connection attempts by result", ["result"])
FANOUT_LATENCY = Histogram(
    "auctions_gateway_fanout_latency_ms", "Server time in a message to its send on a socket (ms)", buckets=MS_BUCKETS
)
HEARTBEAT_RESETS = Counter(
    "auctions_gateway_heartbeat_resets_total", "Sockets reset because they did not answer a heartbeat PING"
)
SLOW_CLOSES = Counter("auctions_gateway_slow_consumer_closes_total", "Sockets closed because they read too slowly")
DRIFT = Histogram(
    "auctions_timer_drift_ms", "Absolute drift clients reported through POST /timers/sync (ms)", buckets=MS_BUCKETS
)
REQUESTS = Counter("auctions_gateway_http_requests_total", "HTTP requests", ["route", "status"])
LOOP_LAG = Histogram("auctions_gateway_loop_lag_ms", "Event-loop lag of the gateway (ms)", buckets=MS_BUCKETS)
GC_PAUSE = Histogram(
    "auctions_gateway_gc_pause_ms",
    "Garbage-collection pauses of the gateway by generation (ms)",
    ["generation"],
    buckets=(0.1, 0.5, 1, 2.5, 5, *MS_BUCKETS[3:]),
)
FEED_UP = Gauge("auctions_gateway_feed_up", "1 while the Kafka feed of ticks and events is live (as /readyz says)")
FEED_SKIPPED = Counter(
    "auctions_gateway_feed_skipped_total", "Feed records skipped: against the contract, or failed", ["topic", "reason"]
)
REDIS_UP = Gauge("auctions_gateway_redis_up", "1 when Redis answered the last PING (once a second; /readyz's redis)")
SOURCE = Counter("auctions_gateway_timer_reads_total", "Timer reads by the source that answered", ["source"])
GATEWAY_TICKS = Counter(
    "auctions_gateway_ticks_total", "Ticks the gateway sent itself for watched auctions quiet for a tick interval"
)
SUBSCRIPTIONS = Counter(
    "auctions_gateway_ws_subscribe_requests_total", "WebSocket subscribe messages by result", ["result"]
)
