"""Every Redis key name the service uses, in one place, behind one configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = ""

    def timer(self, auction_id: str) -> str:
        """Hash: the projected state of one auction."""
        return f"{self.prefix}auction:timer:{auction_id}"

    @property
    def active(self) -> str:
        """Sorted set: live auctions scored by ends_at_ms."""
        return f"{self.prefix}auction:timers:active"

    @property
    def reconciliations(self) -> str:
        """Stream: one entry per correction the reconciler made (capped)."""
        return f"{self.prefix}auction:timer:reconciliations"
