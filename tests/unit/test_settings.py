"""Settings: defaults, parsing, and errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings, describe
from streams.errors import SettingsError


def test_defaults_match_the_design() -> None:
    s = Settings.from_env({})
    assert s.kafka_bootstrap == "localhost:9092"
    assert s.redis_url == "redis://localhost:6379/0"
    assert s.topic_partitions == 8
    assert s.gateway_port == 8080
    assert s.redis_sentinels == ()
    assert s.tick_interval_s <= 15


def test_values_are_parsed() -> None:
    s = Settings.from_env(
        {
            "AUCTION_TIMER_REDIS_SENTINELS": "10.0.0.1:26379, 10.0.0.2:26379",
            "AUCTION_TIMER_ALLOWED_ORIGINS": "https://shop.example/,http://localhost:3000",
            "AUCTION_TIMER_DATA_DIR": "/var/lib/at",
            "AUCTION_TIMER_REPLICATION_FACTOR": "3",
        }
    )
    assert s.redis_sentinels == (("10.0.0.1", 26379), ("10.0.0.2", 26379))
    assert s.allowed_origins == ("https://shop.example", "http://localhost:3000")
    assert s.data_dir == Path("/var/lib/at")
    assert s.replication_factor == 3


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AUCTION_TIMER_TICK_INTERVAL_S", "16"),
        ("AUCTION_TIMER_TICK_INTERVAL_S", "0.5"),
        ("AUCTION_TIMER_TOPIC_PARTITIONS", "eight"),
        ("AUCTION_TIMER_KAFKA_BOOTSTRAP", "localhost"),
        ("AUCTION_TIMER_REDIS_URL", "http://x"),
        ("AUCTION_TIMER_ALLOWED_ORIGINS", "not-an-origin"),
        ("AUCTION_TIMER_KEY_PREFIX", "has space"),
        ("AUCTION_TIMER_LOG_LEVEL", "LOUD"),
        ("AUCTION_TIMER_RECONCILE_SWEEP_S", "241"),
    ],
)
def test_wrong_value_names_the_variable(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        Settings.from_env({name: value})


def test_a_reconciliation_sweep_takes_at_least_one_pass() -> None:
    with pytest.raises(SettingsError, match=r"AUCTION_TIMER_RECONCILE_SWEEP_S=5\.0 is shorter"):
        Settings.from_env({"AUCTION_TIMER_RECONCILE_INTERVAL_S": "10", "AUCTION_TIMER_RECONCILE_SWEEP_S": "5"})


def test_secrets_are_never_echoed() -> None:
    s = Settings.from_env({"AUCTION_TIMER_REDIS_PASSWORD": "hunter2"})
    assert s.redis_password == "hunter2"
    assert "hunter2" not in repr(s.redacted())


def test_every_setting_is_documented_in_the_readme() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    missing = [env for env, _, _ in describe() if env not in readme]
    assert missing == []
