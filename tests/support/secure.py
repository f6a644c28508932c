"""The principals of a secured deployment (SASL_SSL, SCRAM users, ACLs) for tests: their users and
passwords, the environment a process runs as one of them with, and client options for the tests'
own clients, made by the service's own `Settings.kafka_client_options()`."""

from __future__ import annotations

from typing import Any

from app.acls import Principals
from app.settings import Settings
from infra.kafka_server import KafkaCluster, ScramUser

PRINCIPALS = Principals()
ADMIN = ScramUser("admin", "admin-secret-0d6e2c")
# One SCRAM user per role, each with a password no log may show.
USERS = {role: ScramUser(getattr(PRINCIPALS, role), f"{role}-secret-{n}a7c{n}e") for n, role in
         enumerate(("worker", "gateway", "offers", "bids", "replay"))}  # fmt: skip
SECRETS = (ADMIN.password, *(user.password for user in USERS.values()))


def principal_env(kafka: KafkaCluster, user: ScramUser, mechanism: str = "SCRAM-SHA-512") -> dict[str, str]:
    """AUCTION_TIMER_KAFKA_* for a process that runs as `user`."""
    assert kafka.security is not None
    return {
        "AUCTION_TIMER_KAFKA_BOOTSTRAP": kafka.bootstrap,
        "AUCTION_TIMER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "AUCTION_TIMER_KAFKA_SASL_MECHANISM": mechanism,
        "AUCTION_TIMER_KAFKA_SASL_USERNAME": user.name,
        "AUCTION_TIMER_KAFKA_SASL_PASSWORD": user.password,
        "AUCTION_TIMER_KAFKA_TLS_CA_FILE": str(kafka.security.tls.ca_cert),
    }


def options_of(kafka: KafkaCluster, user: ScramUser) -> dict[str, Any]:
    """aiokafka options for a client of the test's that acts as `user`."""
    return Settings.from_env(principal_env(kafka, user)).kafka_client_options()
