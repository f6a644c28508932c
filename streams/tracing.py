"""W3C trace context: parse or mint a `traceparent`, and the trace id of the work in hand.

The trace id of the input that caused some work rides in a context variable so
that every log line written on its behalf carries it without being passed by hand.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from contextvars import ContextVar

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")

current_trace_id: ContextVar[str | None] = ContextVar("current_trace_id", default=None)


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def valid_traceparent(value: object) -> bool:
    if not isinstance(value, str):
        return False
    match = _TRACEPARENT.fullmatch(value)
    if match is None:
        return False
    return match.group(1) != "0" * 32 and match.group(2) != "0" * 16


def trace_id_of(traceparent: str) -> str:
    """The 32-hex trace id inside a traceparent (which must be valid)."""
    return traceparent[3:35]


def child_traceparent(traceparent: str, output_id: str) -> str:
    """Same trace, a span id of its own for the output named `output_id`. Derived, not random:
    an output published again after a crash must carry exactly the same content."""
    span = hashlib.blake2b(f"{traceparent}/{output_id}".encode(), digest_size=8).hexdigest()
    return f"00-{trace_id_of(traceparent)}-{span}-01"


def derived_traceparent(seed: str) -> str:
    """A trace for an input that brought none, derived from where the log holds it (`seed`), so
    that folding the same record again starts the same trace."""
    digest = hashlib.blake2b(seed.encode(), digest_size=24).hexdigest()
    return f"00-{digest[:32]}-{digest[32:]}-01"
