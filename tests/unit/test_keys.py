"""Redis key names: no auction id can name a service key, and one deployment's keys share a
Redis Cluster hash slot (the Lua scripts touch several keys at once)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st
from redis.crc import key_slot

from projections.keys import Keys

VALID_IDS = st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)
PREFIXES = st.from_regex(r"[A-Za-z0-9_:.\-]{0,64}", fullmatch=True)  # AUCTION_TIMER_KEY_PREFIX's rule


def test_ids_that_are_service_key_names_name_auction_data() -> None:
    keys = Keys("p:")
    service = {keys.active, keys.reconciliations, keys.reconciled("w1")}
    for auction_id in ("reconciliations", "active", "timers", "auction", "service"):
        assert keys.timer(auction_id) not in service


@given(prefix=PREFIXES, auction_id=VALID_IDS | st.text(min_size=1, max_size=70))
def test_no_auction_id_crosses_into_the_service_namespace(prefix: str, auction_id: str) -> None:
    keys = Keys(prefix)
    assert keys.timer(auction_id).startswith(keys.data)
    assert not keys.timer(auction_id).startswith(keys.service)
    for service_key in (keys.active, keys.reconciliations, keys.reconciled(auction_id)):
        assert service_key.startswith(keys.service) and not service_key.startswith(keys.data)


@given(prefix=PREFIXES, auction_id=VALID_IDS)
def test_a_deployments_keys_share_one_cluster_slot(prefix: str, auction_id: str) -> None:
    keys = Keys(prefix)
    assert key_slot(keys.timer(auction_id).encode()) == key_slot(keys.active.encode())
    assert key_slot(keys.reconciliations.encode()) == key_slot(keys.active.encode())
    assert key_slot(keys.reconciled("w1").encode()) == key_slot(keys.active.encode())
