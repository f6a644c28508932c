"""What producers write (the demo, tests, the scheduler, the gateway) matches docs/asyncapi.yaml,
and what matches it decodes."""

from __future__ import annotations

import orjson
import pytest

from streams import events as ev
from streams.decode import decode
from streams.message import Message
from tests.support.contracts import check_asyncapi
from tests.support.events import POLICY, T0, record

PAYLOADS: list[tuple[str, ev.Payload]] = [
    ("AuctionStarted", ev.AuctionStarted("a-1", T0, T0 + 60_000, POLICY, "maker-1")),
    ("BidPlaced", ev.BidPlaced("a-1", "b-1", "u-1", "10.50", T0 + 1)),
    ("AuctionCancelled", ev.AuctionCancelled("a-1", "withdrawn", "admin-1")),
    ("ExpireTimer", ev.ExpireTimer("a-1", 3, T0 + 60_001)),
    ("StartTimer", ev.StartTimer("a-1", 1, T0)),
    ("Reconcile", ev.Reconcile("a-1", "gateway-sync")),
]


@pytest.mark.parametrize(("message", "payload"), PAYLOADS, ids=[name for name, _ in PAYLOADS])
def test_encoded_inputs_match_the_contract_and_decode_back(message: str, payload: ev.Payload) -> None:
    rec = record(payload, event_id="evt-1", time_ms=T0)
    check_asyncapi(message, orjson.loads(rec.value))
    assert rec.key == b"a-1"
    assert decode(Message(rec.topic, 0, 0, T0 + 60_001, rec.key, rec.value), 65_536).data == payload
