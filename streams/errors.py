"""Every error this service raises on purpose derives from AuctionTimerError.

Messages an operator may read say what to do about them.
"""

from __future__ import annotations


class AuctionTimerError(Exception):
    """Root of the project's errors."""


class SettingsError(AuctionTimerError):
    """A setting (environment variable) has a wrong value; the message names it."""


class InfraError(AuctionTimerError):
    """Kafka or Redis could not be started, reached or stopped, or is not ready for use."""


class InvalidEvent(AuctionTimerError):
    """An input message that cannot be applied. `reason` is a short stable code for
    metrics and the DLQ; `field` names the offending field when there is one."""

    def __init__(self, reason: str, detail: str, field: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.field = field
        where = f" (field {field!r})" if field else ""
        super().__init__(f"{reason}{where}: {detail}")


class ProjectionError(AuctionTimerError):
    """Redis refused or lost a projection write; the projection retries and reconciles."""


class ReplayError(AuctionTimerError):
    """A replay could not run: unreachable broker, unknown topic, empty range."""
