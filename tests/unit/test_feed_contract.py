"""The gateway's hand-written feed check (app/gateway/contract.py) against the AsyncAPI contract:
what the worker writes passes it, and nothing passes it that the contract's schema refuses."""

from __future__ import annotations

import copy
from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.gateway import contract
from streams import outputs, topics
from streams.effects import TimerChanged
from streams.fold import apply
from tests.support.contracts import asyncapi_message_schema
from tests.support.events import T0, bid, envelope, started

MESSAGE_OF = {topics.TICKS: "TimerTick", topics.TIMER_EVENTS: "TimerEvent"}


def worker_records() -> list[tuple[str, dict[str, Any]]]:
    """Ticks and every kind of timer event, as the worker encodes them."""
    state, effects = apply(None, envelope(started("c-1", T0, T0 + 10_000), time_ms=T0))
    assert state is not None
    changes = [e for e in effects if isinstance(e, TimerChanged)]
    state, effects = apply(state, envelope(bid("c-1", T0 + 9_000), time_ms=T0 + 9_000))
    assert state is not None
    changes += [e for e in effects if isinstance(e, TimerChanged)]
    out = [(topics.TICKS, orjson.loads(outputs.tick(state, 7, T0 + 9_001).value))]
    out += [(topics.TIMER_EVENTS, orjson.loads(outputs.timer_event(c).value)) for c in changes]
    assert {doc["data"]["kind"] for _, doc in out[1:]} >= {"registered", "extended"}
    return out


RECORDS = worker_records()


def contract_allows(topic: str, doc: Any) -> bool:
    try:
        jsonschema.validate(doc, asyncapi_message_schema(MESSAGE_OF[topic]))
    except jsonschema.ValidationError:
        return False
    return True


def gateway_allows(topic: str, doc: Any) -> bool:
    try:
        contract.check(topic, doc)
    except contract.Violation:
        return False
    return True


@pytest.mark.parametrize(("topic", "doc"), RECORDS, ids=[f"{t}:{d['type']}" for t, d in RECORDS])
def test_what_the_worker_writes_passes_both(topic: str, doc: dict[str, Any]) -> None:
    assert contract_allows(topic, doc)
    assert gateway_allows(topic, doc)
    doc = copy.deepcopy(doc)
    doc["data"]["added_by_a_later_worker"] = {"any": ["shape"]}
    doc["added_to_the_envelope"] = 1
    assert gateway_allows(topic, doc), "fields the contract does not name are allowed"


FORGERIES: list[tuple[str, str, Any, str]] = [
    # (where, field, value, expected reason); "-" as the value deletes the field
    ("data", "version", "1", "invalid_value"),  # the record that stopped the fan-out (issue 13)
    ("data", "version", 0, "invalid_value"),
    ("data", "version", True, "invalid_value"),
    ("data", "version", 1.0, "invalid_value"),
    ("data", "auction_id", "A\n", "invalid_value"),
    ("data", "auction_id", "x" * 65, "invalid_value"),
    ("data", "status", "paused", "invalid_value"),
    ("data", "status", ["running"], "invalid_value"),  # once a TypeError (unhashable) in the check
    ("data", "ends_at_ms", -1, "invalid_value"),
    ("data", "ended_at_ms", "soon", "invalid_value"),
    ("data", "trace_id", "not-a-trace", "invalid_value"),
    ("data", "extension_total_ms", 86_400_001, "invalid_value"),
    ("data", "server_time_ms", "-", "missing_field"),
    ("data", "seq", 0, "invalid_value"),
    ("envelope", "specversion", "0.3", "bad_envelope"),
    ("envelope", "id", "", "bad_envelope"),
    ("envelope", "type", "com.marketplace.timer.completed", "unexpected_type"),
    ("envelope", "traceparent", "00-xyz", "bad_envelope"),
    ("envelope", "data", [], "bad_envelope"),
    ("envelope", "time", "-", "missing_field"),
]


@pytest.mark.parametrize(("where", "name", "value", "reason"), FORGERIES, ids=[f"{w}.{n}" for w, n, _, _ in FORGERIES])
def test_forged_ticks_are_refused_by_both_with_a_reason(where: str, name: str, value: Any, reason: str) -> None:
    doc = copy.deepcopy(RECORDS[0][1])
    target = doc["data"] if where == "data" else doc
    if value == "-":
        del target[name]
    else:
        target[name] = value
    with pytest.raises(contract.Violation) as refused:
        contract.check(topics.TICKS, doc)
    assert (refused.value.reason, refused.value.field) == (reason, name)
    # The gateway is stricter than Python's JSON Schema in two places: that counts 1.0 as an
    # integer, and it matches patterns with re.search, whose `$` also matches before a final "\n"
    # (ECMA 262's, which the contract's patterns are written in, does not).
    if value not in (1.0, "A\n"):
        assert not contract_allows(topics.TICKS, doc)


ODD_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.text(max_size=70),
    st.sampled_from(["1.0", "running", "ended", "registered", "com.marketplace.timer.tick", "0" * 32]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.sampled_from(["id", "type", "x"]), st.text(max_size=3), max_size=3),
)


@settings(max_examples=400, deadline=None)
@given(
    record=st.sampled_from(RECORDS),
    # (in data or in the envelope, an existing field by index or any name, a new value or "-" to delete)
    edits=st.lists(
        st.tuples(st.booleans(), st.integers(0, 30) | st.text(min_size=1, max_size=20),
                  st.one_of(st.just("-"), ODD_VALUES)),
        min_size=1, max_size=3,
    ),
)  # fmt: skip
def test_nothing_the_contract_refuses_passes_the_gateway(
    record: tuple[str, dict[str, Any]], edits: list[tuple[bool, int | str, Any]]
) -> None:
    topic, original = record
    doc = copy.deepcopy(original)
    for in_data, which, value in edits:
        target = doc["data"] if in_data and isinstance(doc.get("data"), dict) and doc["data"] else doc
        if not target:  # every field deleted already: nothing left to pick by index
            continue
        field = which if isinstance(which, str) else sorted(target)[which % len(target)]
        if value == "-":
            target.pop(field, None)
        else:
            target[field] = value
    if gateway_allows(topic, doc):
        assert contract_allows(topic, doc), orjson.dumps(doc).decode()
