"""`auction-timer acls`: the printed kafka-acls commands say exactly what `--apply` creates (both
come from app/acls.py; tests/integration/test_kafka_security.py checks the broker enforces it)."""

from __future__ import annotations

import io
import shlex
from contextlib import redirect_stdout

import pytest

from app.acls import Acl, Principals, service_acls
from app.cli import main
from streams.errors import SettingsError


def parsed(line: str) -> set[Acl]:
    """The ACLs one printed kafka-acls command adds."""
    words = shlex.split(line)
    assert words[:2] == ["kafka-acls.sh", "--bootstrap-server"] and "--add" in words
    value = {words[i]: words[i + 1] for i in range(len(words) - 1) if words[i].startswith("--")}
    operations = [words[i + 1] for i, word in enumerate(words) if word == "--operation"]
    resource = "Topic" if "--topic" in value else "Group"
    pattern = value.get("--resource-pattern-type", "literal").upper()
    name = value[f"--{resource.lower()}"]
    return {Acl(value["--allow-principal"], op, resource, name, pattern) for op in operations}


def test_the_printed_commands_are_the_acls() -> None:
    out = io.StringIO()
    env = {"AUCTION_TIMER_KAFKA_BOOTSTRAP": "kafka-1:9093", "AUCTION_TIMER_APP_ID": "timers-eu"}
    with redirect_stdout(out):
        assert main(["acls", "--worker", "w", "--gateway", "g", "--command-config", "/etc/kafka/admin.conf"], env) == 0
    lines = out.getvalue().splitlines()
    assert all("--bootstrap-server kafka-1:9093 --command-config /etc/kafka/admin.conf" in line for line in lines)
    printed = set().union(*(parsed(line) for line in lines))
    expected = service_acls(Principals(worker="w", gateway="g"), "timers-eu")
    assert printed == set(expected) and len(expected) == len(set(expected))
    # The app id names the changelog and the groups the worker may use.
    assert Acl("User:w", "Read", "Group", "timers-eu-projection") in printed
    assert Acl("User:w", "Write", "Topic", "timers-eu-", "PREFIXED") in printed


def test_only_the_worker_writes_what_the_service_trusts() -> None:
    writers: dict[str, set[str]] = {}
    for acl in service_acls(Principals(), "auction-timer"):
        if acl.operation == "Write":
            writers.setdefault(acl.name, set()).add(acl.principal)
    trusted = ("auctions.timer.commands", "auctions.timer.ticks", "auctions.timer.events", "auctions.timer.dlq",
               "auction-timer-")  # fmt: skip
    assert {name: writers[name] for name in trusted} == {name: {"User:auction-timer-worker"} for name in trusted}


@pytest.mark.parametrize("name", ["", "a b", "User:x", "x;y", "x" * 129])
def test_a_principal_name_is_checked(name: str) -> None:
    with pytest.raises(SettingsError, match="principal"):
        Principals(gateway=name)
