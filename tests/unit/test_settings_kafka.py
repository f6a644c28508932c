"""Kafka connection settings: SASL/SCRAM over TLS, checked at start-up with errors naming the
variable, turned into client options in one place, and the password kept out of reprs and errors."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from app.settings import Settings
from app.worker import faust_credentials
from infra.tls import throwaway_certs
from streams.errors import SettingsError

SECRET = "scram-secret-5b1f"


def sasl(**extra: str) -> dict[str, str]:
    return {
        "AUCTION_TIMER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "AUCTION_TIMER_KAFKA_SASL_USERNAME": "auction-timer-worker",
        "AUCTION_TIMER_KAFKA_SASL_PASSWORD": SECRET,
        **extra,
    }


def test_plaintext_by_default() -> None:
    assert Settings.from_env({}).kafka_client_options() == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(Settings.from_env({}).kafka_client_options()) is None


def test_sasl_ssl_becomes_scram_options_with_a_verifying_context(tmp_path: Path) -> None:
    tls = throwaway_certs(tmp_path)
    settings = Settings.from_env(sasl(AUCTION_TIMER_KAFKA_TLS_CA_FILE=str(tls.ca_cert)))
    options = settings.kafka_client_options()
    context = options.pop("ssl_context")
    assert options == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "auction-timer-worker",
        "sasl_plain_password": SECRET,
    }
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert any("auction-timer test CA" in str(ca["subject"]) for ca in context.get_ca_certs())
    faust = faust_credentials(settings.kafka_client_options())
    assert faust is not None
    assert (faust.protocol.value, faust.mechanism.value, faust.username) == (
        "SASL_SSL",
        "SCRAM-SHA-512",
        "auction-timer-worker",
    )
    low = Settings.from_env(sasl(AUCTION_TIMER_KAFKA_SASL_MECHANISM="scram-sha-256"))
    assert low.kafka_client_options()["sasl_mechanism"] == "SCRAM-SHA-256"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"AUCTION_TIMER_KAFKA_SECURITY_PROTOCOL": "SSL"}, "AUCTION_TIMER_KAFKA_SECURITY_PROTOCOL"),
        (sasl(AUCTION_TIMER_KAFKA_SASL_MECHANISM="PLAIN"), "AUCTION_TIMER_KAFKA_SASL_MECHANISM"),
        (sasl(AUCTION_TIMER_KAFKA_SASL_USERNAME=""), "AUCTION_TIMER_KAFKA_SASL_USERNAME"),
        (sasl(AUCTION_TIMER_KAFKA_SASL_USERNAME="a,b=c"), "AUCTION_TIMER_KAFKA_SASL_USERNAME"),
        (sasl(AUCTION_TIMER_KAFKA_SASL_PASSWORD=""), "AUCTION_TIMER_KAFKA_SASL_PASSWORD"),
        (sasl(AUCTION_TIMER_KAFKA_TLS_CA_FILE="/nowhere/ca.crt"), "AUCTION_TIMER_KAFKA_TLS_CA_FILE"),
        # Credentials with PLAINTEXT: a deployment that believes it authenticates and does not.
        ({"AUCTION_TIMER_KAFKA_SASL_PASSWORD": SECRET}, "AUCTION_TIMER_KAFKA_SASL_PASSWORD"),
        ({"AUCTION_TIMER_KAFKA_SASL_USERNAME": "worker"}, "AUCTION_TIMER_KAFKA_SASL_USERNAME"),
    ],
)
def test_a_wrong_combination_names_the_variable_and_never_the_password(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named) as refused:
        Settings.from_env(env)
    assert SECRET not in str(refused.value)


def test_a_ca_file_without_certificates_is_refused(tmp_path: Path) -> None:
    junk = tmp_path / "ca.crt"
    junk.write_text("not a certificate")
    with pytest.raises(SettingsError, match=r"AUCTION_TIMER_KAFKA_TLS_CA_FILE.*no PEM CA certificate"):
        Settings.from_env(sasl(AUCTION_TIMER_KAFKA_TLS_CA_FILE=str(junk)))


def test_the_password_is_in_no_repr() -> None:
    settings = Settings.from_env(sasl())
    assert SECRET not in repr(settings)
    assert settings.redacted()["kafka_sasl_password"] == "***"
    assert SECRET not in repr(settings.topic_plan())
    assert SECRET not in repr(faust_credentials(settings.kafka_client_options()))
