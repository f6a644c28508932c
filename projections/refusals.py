"""Redis errors that retrying cannot fix, told apart from those that pass.

A permanent error is Redis refusing one command for what it is or what it touches: WRONGTYPE
(a key holding something else), NOPERM (an ACL that does not allow the key or the command),
a script error on a malformed hash. The same call gets the same answer forever, so it is
reported (metric, log, alert AuctionProjectionRefused) and skipped, and the other auctions go
on; the reconciler reports it again at least once a sweep until someone fixes the key or the ACL,
and then repairs it. Everything else (connection loss, timeouts, READONLY while a replica is
promoted, OOM, LOADING, MASTERDOWN, TRYAGAIN, NOSCRIPT) is the server's passing state:
retried.
"""

from __future__ import annotations

import logging
import re

from redis.exceptions import (
    AskError,
    ClusterDownError,
    ExecAbortError,
    NoScriptError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)

from projections.metrics import REFUSED

TRANSIENT_REPLIES = (
    ReadOnlyError,
    OutOfMemoryError,
    NoScriptError,
    TryAgainError,
    ClusterDownError,
    AskError,  # MOVED too
    ExecAbortError,
)
_CODE = re.compile(r"[A-Z]{2,20}")


def is_permanent(exc: BaseException) -> bool:
    return isinstance(exc, ResponseError) and not isinstance(exc, TRANSIENT_REPLIES)


def error_code(exc: BaseException) -> str:
    """The Redis error code (WRONGTYPE, NOPERM, ERR, ...), a bounded metric label."""
    code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
    return code if _CODE.fullmatch(code) else "ERR"


def report(component: str, auction_id: str, exc: BaseException, log: logging.Logger) -> None:
    """Count and log one auction that Redis refuses for good."""
    code = error_code(exc)
    REFUSED.labels(component, code).inc()
    log.error(
        "Redis refuses this auction's projection for good; skipped, the others go on",
        extra={"auction_id": auction_id, "component": component, "code": code, "error": str(exc)[:300]},
    )
