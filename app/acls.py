"""The Kafka ACLs the service needs, one principal per role: the one source of truth for
`auction-timer acls` (kafka-acls commands to run, or applied through the Admin API) and for the
tests' broker.

Who may do what (README, Security):
- the worker folds the inputs and is the only writer of what others trust: the scheduler's
  commands, ticks, timer events, audit, analytics, the DLQ and the table's changelog;
- upstream services write their own input topic and nothing else;
- the gateway reads ticks and timer events, and writes only its records of client syncs (audit
  and analytics, which no part of the service reads back);
- replay reads the inputs and the table's changelog.
Nobody else gets anything: the broker refuses what no ACL allows.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, fields
from typing import Any

from aiokafka.client import AIOKafkaClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.admin import CreateAclsRequest

from streams import topics
from streams.errors import InfraError, SettingsError

# Kafka's wire codes (org.apache.kafka.common.{resource,acl}).
RESOURCE_TYPES = {"Topic": 2, "Group": 3}
PATTERN_TYPES = {"LITERAL": 3, "PREFIXED": 4}
OPERATIONS = {"Read": 3, "Write": 4, "Create": 5, "Describe": 8, "DescribeConfigs": 10}
ALLOW = 3


@dataclass(frozen=True, slots=True)
class Acl:
    """Allow `principal` (`User:name`) `operation` on the `resource` named (or prefixed by) `name`."""

    principal: str
    operation: str
    resource: str
    name: str
    pattern: str = "LITERAL"


@dataclass(frozen=True, slots=True)
class Principals:
    """Each role's SCRAM user name. Upstream is two services: the offers service registers and
    cancels auctions, the bidding service places bids."""

    worker: str = "auction-timer-worker"
    gateway: str = "auction-timer-gateway"
    offers: str = "offers"
    bids: str = "bids"
    replay: str = "auction-timer-replay"

    def __post_init__(self) -> None:
        for role in fields(self):
            name = getattr(self, role.name)
            if not re.fullmatch(r"[A-Za-z0-9_.@\-]{1,128}", name):
                raise SettingsError(f"the {role.name} principal {name!r} must be 1-128 of [A-Za-z0-9_.@-]")


def _on(
    principal: str, operations: tuple[str, ...], resource: str, names: tuple[str, ...], pattern: str = "LITERAL"
) -> list[Acl]:
    user = f"User:{principal}"
    return [Acl(user, op, resource, name, pattern) for name in names for op in operations]


def service_acls(who: Principals, app_id: str) -> list[Acl]:
    """Every ACL the service needs: nothing more is allowed to anyone but a super user."""
    changelog = topics.changelog_topic(app_id)
    every_topic = (*topics.ALL_TOPICS, changelog)
    return [
        # The worker's start-up (ensure_topics) creates what is missing and checks the inputs' configs.
        *_on(who.worker, ("Create", "Describe"), "Topic", topics.ALL_TOPICS),
        *_on(who.worker, ("DescribeConfigs",), "Topic", topics.INPUT_TOPICS),
        *_on(who.worker, ("Read",), "Topic", (*topics.INPUT_TOPICS, topics.TIMER_EVENTS)),
        *_on(who.worker, ("Write",), "Topic", (topics.COMMANDS, *topics.OUTPUT_TOPICS)),
        # The table's changelog and Faust's own topics ({app_id}-__assignor-__leader) share the app id.
        *_on(who.worker, ("Create", "Describe", "Read", "Write"), "Topic", (f"{app_id}-",), "PREFIXED"),
        *_on(who.worker, ("Read",), "Group", (app_id, f"{app_id}-projection")),
        *_on(who.offers, ("Write",), "Topic", (topics.AUCTION_STARTED, topics.AUCTION_CANCELLED)),
        *_on(who.bids, ("Write",), "Topic", (topics.BID_PLACED,)),
        *_on(who.gateway, ("Read",), "Topic", (topics.TICKS, topics.TIMER_EVENTS)),
        *_on(who.gateway, ("Write",), "Topic", (topics.AUDIT, topics.ANALYTICS)),
        # The gateway's start-up runs the worker's topic check: it must see the topics, never create them.
        *_on(who.gateway, ("Describe",), "Topic", every_topic),
        *_on(who.gateway, ("DescribeConfigs",), "Topic", topics.INPUT_TOPICS),
        *_on(who.replay, ("Read",), "Topic", (*topics.INPUT_TOPICS, changelog)),
    ]


def kafka_acls_commands(acls: list[Acl], bootstrap: str, command_config: str) -> list[str]:
    """The ACLs as `kafka-acls.sh --add` commands, one per principal and resource."""
    grouped: dict[tuple[str, str, str, str], list[str]] = {}
    for acl in acls:
        grouped.setdefault((acl.principal, acl.resource, acl.name, acl.pattern), []).append(acl.operation)
    lines = []
    for (principal, resource, name, pattern), operations in grouped.items():
        words = ["kafka-acls.sh", "--bootstrap-server", bootstrap, "--command-config", command_config, "--add",
                 "--allow-principal", principal, *(w for op in operations for w in ("--operation", op)),
                 f"--{resource.lower()}", name]  # fmt: skip
        if pattern != "LITERAL":
            words += ["--resource-pattern-type", pattern.lower()]
        lines.append(shlex.join(words))
    return lines


async def create_acls(acls: list[Acl], bootstrap: str, **client_options: Any) -> None:
    """Create the ACLs through the Admin API (CreateAcls; creating one that exists is a no-op),
    connected as a principal that may (a super user, or Alter on the cluster)."""
    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=15_000, **client_options)
    try:
        await client.bootstrap()
        node = client.get_random_node()
        for acl in acls:
            request = CreateAclsRequest(
                RESOURCE_TYPES[acl.resource], acl.name, PATTERN_TYPES[acl.pattern], acl.principal, "*",
                OPERATIONS[acl.operation], ALLOW,
            )  # fmt: skip
            [(code, message)] = (await client.send(node, request)).creation_responses
            if code:
                raise InfraError(f"Kafka refused the ACL {acl}: error {code} {message}")
    except KafkaError as exc:
        raise InfraError(f"cannot create ACLs through Kafka at {bootstrap}: {exc!r}") from None
    finally:
        await client.close()
