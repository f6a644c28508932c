"""Projection and reconciliation metrics."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WRITES = Counter("auctions_projection_writes_total", "Projection CAS writes", ["result"])
ERRORS = Counter("auctions_projection_errors_total", "Projection writes that failed (retried)", ["error"])
REFUSED = Counter(
    "auctions_projection_refused_total",
    "Auctions Redis refused for good (WRONGTYPE, NOPERM, ...): skipped, the others went on",
    ["component", "error"],
)
LAG = Gauge("auctions_projection_lag_ms", "Now minus the server time of the newest event projected")
CORRECTIONS = Counter("auctions_reconciliation_corrections_total", "Redis entries the reconciler rewrote", ["reason"])
RECONCILE_PASSES = Counter("auctions_reconciliation_passes_total", "Reconciliation passes", ["result"])
