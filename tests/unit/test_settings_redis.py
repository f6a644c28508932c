"""Redis connection settings: TLS files, an ACL user, and credentials kept out of URLs, errors
and reprs."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import Settings
from streams.errors import SettingsError


def test_credentials_in_the_url_are_refused_without_echoing_them() -> None:
    with pytest.raises(SettingsError, match="AUCTION_TIMER_REDIS_URL") as refused:
        Settings.from_env({"AUCTION_TIMER_REDIS_URL": "rediss://app:hunter2@redis.internal:6380/0"})
    assert "hunter2" not in str(refused.value)
    assert "AUCTION_TIMER_REDIS_USERNAME" in str(refused.value)


def test_the_password_is_in_no_repr() -> None:
    s = Settings.from_env({"AUCTION_TIMER_REDIS_USERNAME": "app", "AUCTION_TIMER_REDIS_PASSWORD": "hunter2"})
    assert (s.redis_username, s.redis_password) == ("app", "hunter2")
    assert "hunter2" not in repr(s) and "hunter2" not in repr(s.redacted())


def test_tls_files_must_exist_and_go_with_a_standalone_rediss_url(tmp_path: Path) -> None:
    ca, cert, key = (tmp_path / name for name in ("ca.crt", "client.crt", "client.key"))
    for path in (ca, cert, key):
        path.write_text("-----BEGIN-----")
    tls = {"AUCTION_TIMER_REDIS_URL": "rediss://redis.internal:6380/0", "AUCTION_TIMER_REDIS_TLS_CA_FILE": str(ca),
           "AUCTION_TIMER_REDIS_TLS_CERT_FILE": str(cert), "AUCTION_TIMER_REDIS_TLS_KEY_FILE": str(key)}  # fmt: skip
    assert Settings.from_env(tls).redis_tls_ca_file == ca
    with pytest.raises(SettingsError, match="AUCTION_TIMER_REDIS_TLS_CA_FILE"):
        Settings.from_env({**tls, "AUCTION_TIMER_REDIS_TLS_CA_FILE": str(tmp_path / "missing.crt")})
    with pytest.raises(SettingsError, match="rediss://"):
        Settings.from_env({**tls, "AUCTION_TIMER_REDIS_URL": "redis://redis.internal:6379/0"})
    with pytest.raises(SettingsError, match="go together"):
        Settings.from_env({**tls, "AUCTION_TIMER_REDIS_TLS_KEY_FILE": ""})
    with pytest.raises(SettingsError, match="Sentinel"):
        Settings.from_env({**tls, "AUCTION_TIMER_REDIS_SENTINELS": "10.0.0.1:26379"})


def test_an_acl_username_is_checked() -> None:
    with pytest.raises(SettingsError, match="AUCTION_TIMER_REDIS_USERNAME"):
        Settings.from_env({"AUCTION_TIMER_REDIS_USERNAME": "has space"})
