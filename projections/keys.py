"""Every Redis key name the service uses, in one place, behind one configurable prefix.

Two namespaces that no auction id can cross: auction data under `{auction-timer}:auction:`
and the service's own keys under `{auction-timer}:service:`. An auction id only ever follows
the fixed `auction:` part, so no id (valid or not) can name a service key: an auction called
`reconciliations` or `active` is just an auction.

`{auction-timer}` is a Redis Cluster hash tag: every key of one deployment lands in one hash
slot. The Lua compare-and-set touches an auction's hash and the active set in one call, and
the reconciler's check reads 200 hashes in one call; Cluster allows that only within a slot.
The projection is small (about 1 KB an auction), so one slot holds it; Cluster then buys
failover, not sharding.
"""

from __future__ import annotations

from dataclasses import dataclass

HASH_TAG = "{auction-timer}"


@dataclass(frozen=True, slots=True)
class Keys:
    prefix: str = ""

    @property
    def data(self) -> str:
        """The namespace of auction data: every per-auction key starts with it."""
        return f"{self.prefix}{HASH_TAG}:auction:"

    @property
    def service(self) -> str:
        """The namespace of the service's own keys."""
        return f"{self.prefix}{HASH_TAG}:service:"

    def timer(self, auction_id: str) -> str:
        """Hash: the projected state of one auction."""
        return self.data + auction_id

    @property
    def active(self) -> str:
        """Sorted set: live auctions scored by ends_at_ms."""
        return self.service + "active"

    @property
    def reconciliations(self) -> str:
        """Stream: one entry per correction the reconciler made (capped)."""
        return self.service + "reconciliations"

    def reconciled(self, worker: str) -> str:
        """String: how many passes a worker's reconciler has completed (its marker, see
        projections/reconciler.py); `worker` is a token of the worker's own."""
        return self.service + "reconciled:" + worker
