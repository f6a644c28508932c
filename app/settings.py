"""One typed settings object, read once from the environment at start-up and passed down.

Every variable is `AUCTION_TIMER_<NAME>`; `describe()` lists them with defaults
for `--help` and the README. A wrong value stops start-up with a message that
names the variable and says what it accepts.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from streams.errors import SettingsError
from streams.fold import Rules
from streams.topic_admin import TopicPlan

PREFIX = "AUCTION_TIMER_"
_HOST_PORT = re.compile(r"[A-Za-z0-9_.\-]+:\d{1,5}")


def _number(low: float, high: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        value = float(raw)
        if not low <= value <= high:
            raise ValueError(f"must be between {low:g} and {high:g}")
        return value

    return parse


def _integer(low: int, high: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"must be an integer between {low} and {high}")
        return value

    return parse


def _host_ports(raw: str) -> tuple[tuple[str, int], ...]:
    out = []
    for item in filter(None, (p.strip() for p in raw.split(","))):
        if not _HOST_PORT.fullmatch(item):
            raise ValueError(f"{item!r} is not host:port")
        host, port = item.rsplit(":", 1)
        out.append((host, int(port)))
    return tuple(out)


def _bootstrap(raw: str) -> str:
    if not raw or not all(_HOST_PORT.fullmatch(p.strip()) for p in raw.split(",")):
        raise ValueError("must be a comma-separated list of host:port")
    return raw


def _redis_url(raw: str) -> str:
    if not raw.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("must start with redis://, rediss:// (TLS) or unix://")
    if "@" in urlsplit(raw).netloc:
        raise ValueError("holds credentials: set AUCTION_TIMER_REDIS_USERNAME and _PASSWORD instead (never logged)")
    return raw


def _host(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.:\-]{1,253}", raw):
        raise ValueError("must be a host name or an IP address")
    return raw


def _redis_user(raw: str) -> str | None:
    if raw and not re.fullmatch(r"[A-Za-z0-9_.@\-]{1,128}", raw):
        raise ValueError("must be 1-128 of [A-Za-z0-9_.@-]")
    return raw or None


def _file(raw: str) -> Path | None:
    if not raw:
        return None
    path = Path(raw)
    if not path.is_file():
        raise ValueError("is not a readable file")
    return path


def _without_credentials(raw: str) -> str:
    """A value as an error message may show it: any user:password@ in a URL masked."""
    return re.sub(r"//[^/@\s]*@", "//***@", raw)


def _origins(raw: str) -> tuple[str, ...]:
    items = tuple(filter(None, (p.strip().rstrip("/").lower() for p in raw.split(","))))
    for item in items:
        if not re.fullmatch(r"https?://[^/\s]+", item):
            raise ValueError(f"{item!r} is not an origin like https://example.com")
    return items


def _prefix(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_:.\-]{0,64}", raw):
        raise ValueError("may hold up to 64 of [A-Za-z0-9_:.-]")
    return raw


def _app_id(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_.\-]{1,100}", raw):
        raise ValueError("must be 1-100 of [A-Za-z0-9_.-] (it names the consumer group and changelog topic)")
    return raw


def _replication(raw: str) -> int:
    """0 means: 3 when the cluster has three brokers or more, else the broker count."""
    if raw == "auto":
        return 0
    return _integer(1, 7)(raw)


LONGEST_AUCTION_MS = 366 * 24 * 3600 * 1000
_UNITS_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"([0-9]{1,9})(ms|s|m|h|d)")


def _duration(low_ms: int, high_ms: int) -> Callable[[str], int]:
    """A duration like 7d, 12h, 30m, 45s or 250ms, in milliseconds."""

    def parse(raw: str) -> int:
        match = _DURATION.fullmatch(raw)
        if match is None:
            raise ValueError("must be a number with a unit: ms, s, m, h or d (for example 7d)")
        value = int(match.group(1)) * _UNITS_MS[match.group(2)]
        if not low_ms <= value <= high_ms:
            raise ValueError(f"must be between {low_ms} ms and {high_ms // 86_400_000} days")
        return value

    return parse


def _store(raw: str) -> str:
    if raw not in ("rocksdb", "memory"):
        raise ValueError("must be rocksdb or memory")
    return raw


def _retention(raw: str) -> int:
    value = int(raw)
    if value != -1 and value < LONGEST_AUCTION_MS:
        raise ValueError(f"must be -1 (forever) or at least {LONGEST_AUCTION_MS} ms (366 days, the longest auction)")
    return value


def _level(raw: str) -> str:
    if raw.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
    return raw.upper()


def _boolean(raw: str) -> bool:
    if raw.lower() not in {"true", "false"}:
        raise ValueError("must be true or false")
    return raw.lower() == "true"


def _optional(raw: str) -> str | None:
    return raw or None


KAFKA_PROTOCOLS = ("PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("SCRAM-SHA-512", "SCRAM-SHA-256")


def _one_of(allowed: tuple[str, ...]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw.upper() not in allowed:
            raise ValueError(f"must be one of {', '.join(allowed)}")
        return raw.upper()

    return parse


def _ca_file(raw: str) -> Path | None:
    path = _file(raw)
    if path is not None:
        try:
            ssl.create_default_context(cafile=str(path))
        except (ssl.SSLError, ValueError):
            raise ValueError("holds no PEM CA certificate") from None
    return path


def _sasl_user(raw: str) -> str | None:
    # SCRAM names are escaped on the wire (RFC 5802: "=" and ","); keep them plain and printable.
    if raw and not re.fullmatch(r"[A-Za-z0-9_.@\-]{1,128}", raw):
        raise ValueError("must be 1-128 of [A-Za-z0-9_.@-]")
    return raw or None


def setting(env: str, default: str, parse: Callable[[str], Any], doc: str, secret: bool = False) -> Any:
    """A dataclass field that knows its variable, raw default, parser and meaning."""
    return field(
        default=parse(default),
        repr=not secret,
        metadata={"env": PREFIX + env, "raw_default": default, "parse": parse, "doc": doc, "secret": secret},
    )


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = setting("KAFKA_BOOTSTRAP", "localhost:9092", _bootstrap, "Kafka bootstrap servers")
    kafka_security_protocol: str = setting(
        "KAFKA_SECURITY_PROTOCOL",
        "PLAINTEXT",
        _one_of(KAFKA_PROTOCOLS),
        "PLAINTEXT, or SASL_SSL: SCRAM authentication over TLS (certificate and host name verified)",
    )
    kafka_sasl_mechanism: str = setting(
        "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512", _one_of(SASL_MECHANISMS), "SCRAM-SHA-512 or SCRAM-SHA-256 (SASL_SSL)"
    )
    kafka_sasl_username: str | None = setting(
        "KAFKA_SASL_USERNAME", "", _sasl_user, "this process's Kafka principal (SASL_SSL; README, Security)"
    )
    kafka_sasl_password: str | None = setting(
        "KAFKA_SASL_PASSWORD", "", _optional, "its SCRAM password (SASL_SSL; never logged)", secret=True
    )
    kafka_tls_ca_file: Path | None = setting(
        "KAFKA_TLS_CA_FILE", "", _ca_file, "CA certificates for the brokers (SASL_SSL); empty: the system's"
    )
    redis_url: str = setting(
        "REDIS_URL",
        "redis://localhost:6379/0",
        _redis_url,
        "Redis URL: redis://, rediss:// (TLS) or unix://, without credentials (ignored when Sentinels are set)",
    )
    redis_sentinels: tuple[tuple[str, int], ...] = setting(
        "REDIS_SENTINELS", "", _host_ports, "Sentinel addresses host:port,...; empty means standalone Redis"
    )
    redis_sentinel_master: str = setting("REDIS_SENTINEL_MASTER", "auction-timer", _app_id, "Sentinel master name")
    redis_username: str | None = setting(
        "REDIS_USERNAME", "", _redis_user, "Redis ACL user (data nodes); empty: the default user"
    )
    redis_password: str | None = setting(
        "REDIS_PASSWORD", "", _optional, "Redis password (data nodes; never logged)", secret=True
    )
    redis_tls_ca_file: Path | None = setting(
        "REDIS_TLS_CA_FILE", "", _file, "CA certificates for a rediss:// Redis; empty: the system's"
    )
    redis_tls_cert_file: Path | None = setting(
        "REDIS_TLS_CERT_FILE", "", _file, "client certificate for a rediss:// Redis that asks for one"
    )
    redis_tls_key_file: Path | None = setting("REDIS_TLS_KEY_FILE", "", _file, "the private key of REDIS_TLS_CERT_FILE")
    key_prefix: str = setting("KEY_PREFIX", "", _prefix, "prefix put before every Redis key")
    app_id: str = setting("APP_ID", "auction-timer", _app_id, "Faust app id: consumer group and changelog names")
    worker_id: str | None = setting(
        "WORKER_ID", "", _optional, "stable id of this worker (Kafka static membership: a restart keeps its partitions)"
    )
    topic_partitions: int = setting("TOPIC_PARTITIONS", "8", _integer(1, 1024), "partitions of every topic")
    input_retention_ms: int = setting(
        "INPUT_RETENTION_MS",
        "-1",
        _retention,
        "how long the input topics keep records (-1: forever); at least the longest auction (366 days) "
        "plus ENDED_RETENTION, or replay cannot rebuild what it promises",
    )
    replication_factor: int = setting(
        "REPLICATION_FACTOR", "auto", _replication, "topic replication; auto = 3 on three brokers or more"
    )
    tick_interval_s: float = setting("TICK_INTERVAL_S", "5", _number(1, 15), "seconds between ticks (1-15)")
    allowed_lateness_ms: int = setting(
        "ALLOWED_LATENESS_MS",
        "0",
        _integer(0, 5_000),
        "how long completion waits for bids placed before the end that reach the log after it (0-5000 ms)",
    )
    kafka_tick_horizon_s: float = setting(
        "KAFKA_TICK_HORIZON_S",
        "300",
        _number(0, 86_400),
        "auctions this close to their end get periodic ticks through Kafka; the gateway ticks the rest",
    )
    reconcile_interval_s: float = setting(
        "RECONCILE_INTERVAL_S", "10", _number(0.5, 240), "seconds between reconciliation passes (0.5-240)"
    )
    reconcile_sweep_s: float = setting(
        "RECONCILE_SWEEP_S",
        "120",
        _number(0.5, 240),
        "every followed auction is compared with Redis at least this often (a pass compares the changed"
        " ones and a slice of the rest); at least RECONCILE_INTERVAL, at most 240 s (a refused auction is"
        " reported when compared, within the AuctionProjectionRefused alert's 5-minute window)",
    )
    ended_ttl_s: int = setting(
        "ENDED_TTL_S",
        "3600",
        _integer(1, 30 * 86400),
        "seconds an ended timer's Redis hash is kept (at most ENDED_RETENTION)",
    )
    ended_retention_ms: int = setting(
        "ENDED_RETENTION",
        "7d",
        _duration(1_000, 3_650 * 86_400_000),
        "how long an ended or cancelled auction stays in the table (late bids are audited as late); then it is"
        " removed with a changelog tombstone and a late bid is an expired_auction",
    )
    table_store: str = setting(
        "TABLE_STORE", "rocksdb", _store, "where a worker keeps its table: rocksdb (on disk under DATA_DIR) or memory"
    )
    standby_replicas: int = setting(
        "STANDBY_REPLICAS", "1", _integer(0, 3), "warm copies of each table partition on other workers"
    )
    gateway_host: str = setting("GATEWAY_HOST", "127.0.0.1", _host, "gateway bind address")
    gateway_port: int = setting("GATEWAY_PORT", "8080", _integer(0, 65535), "gateway port")
    gateway_reuse_port: bool = setting(
        "GATEWAY_REUSE_PORT",
        "false",
        _boolean,
        "true: bind GATEWAY_PORT with SO_REUSEPORT, so several gateway processes (one per core) share it",
    )
    allowed_origins: tuple[str, ...] = setting(
        "ALLOWED_ORIGINS",
        "",
        _origins,
        "Origins (besides the gateway's own, from GATEWAY_HOST/PORT) whose pages may open WebSockets, comma separated",
    )
    ws_max_per_address: int = setting(
        "WS_MAX_PER_ADDRESS", "50", _integer(1, 100_000), "WebSocket connections allowed per client address"
    )
    ws_send_queue: int = setting(
        "WS_SEND_QUEUE",
        "64",
        _integer(4, 10_000),
        "messages queued per socket (plus one per auction it follows) before it is closed as slow",
    )
    ws_max_subscriptions: int = setting(
        "WS_MAX_SUBSCRIPTIONS", "500", _integer(1, 10_000), "auctions one /updates WebSocket may follow at once"
    )
    ws_subscribe_rate_per_min: int = setting(
        "WS_SUBSCRIBE_RATE_PER_MIN", "60", _integer(1, 100_000), "subscribe messages per /updates WebSocket per minute"
    )
    ws_heartbeat_s: float = setting(
        "WS_HEARTBEAT_S",
        "20",
        _number(1, 300),
        "seconds a WebSocket may be silent before the gateway pings it; one that does not answer in half that is reset",
    )
    ws_close_grace_s: float = setting(
        "WS_CLOSE_GRACE_S",
        "2",
        _number(0.1, 60),
        "seconds a closing WebSocket client gets to read what is queued for it before the connection is reset",
    )
    sync_rate_per_min: int = setting(
        "SYNC_RATE_PER_MIN", "30", _integer(1, 100_000), "POST /timers/sync calls per client address per minute"
    )
    max_event_bytes: int = setting(
        "MAX_EVENT_BYTES", "65536", _integer(1024, 1_048_576), "largest input message accepted"
    )
    worker_metrics_port: int = setting(
        "WORKER_METRICS_PORT", "9108", _integer(0, 65535), "worker Prometheus port; 0 turns it off"
    )
    worker_metrics_host: str = setting(
        "WORKER_METRICS_HOST", "127.0.0.1", _host, "address the worker's Prometheus port binds to"
    )
    gateway_metrics_port: int = setting(
        "GATEWAY_METRICS_PORT",
        "0",
        _integer(0, 65535),
        "a separate port for the gateway's /metrics (on GATEWAY_METRICS_HOST); 0: /metrics on the gateway's port",
    )
    gateway_metrics_host: str = setting(
        "GATEWAY_METRICS_HOST", "127.0.0.1", _host, "address GATEWAY_METRICS_PORT binds to"
    )
    data_dir: Path = setting("DATA_DIR", ".data", Path, "local state: Faust tables, demo servers' files")
    log_level: str = setting("LOG_LEVEL", "INFO", _level, "DEBUG, INFO, WARNING or ERROR")

    @classmethod
    def from_env(cls, env: Mapping[str, str], **overrides: Any) -> Settings:
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            if name not in env:
                continue
            raw = env[name].strip()
            try:
                values[f.name] = f.metadata["parse"](raw)
            except ValueError as exc:
                shown = "***" if f.metadata["secret"] else repr(_without_credentials(raw))
                raise SettingsError(
                    f"{name}={shown} is invalid: {exc}. Default: {f.metadata['raw_default']!r}"
                ) from None
        values.update(overrides)
        return cls(**values)

    def __post_init__(self) -> None:
        self._check_kafka_security()
        tls_files = [self.redis_tls_ca_file, self.redis_tls_cert_file, self.redis_tls_key_file]
        if self.redis_sentinels and self.redis_url.startswith("rediss://"):
            raise SettingsError(
                f"{PREFIX}REDIS_URL: TLS (rediss://) through Sentinel is not supported; use a standalone "
                f"rediss:// Redis or Sentinels without TLS"
            )
        if any(tls_files) and (self.redis_sentinels or not self.redis_url.startswith("rediss://")):
            raise SettingsError(f"{PREFIX}REDIS_TLS_* apply only to a standalone rediss:// {PREFIX}REDIS_URL")
        if (self.redis_tls_cert_file is None) != (self.redis_tls_key_file is None):
            raise SettingsError(f"{PREFIX}REDIS_TLS_CERT_FILE and {PREFIX}REDIS_TLS_KEY_FILE go together")
        if self.ended_ttl_s * 1000 > self.ended_retention_ms:
            raise SettingsError(
                f"{PREFIX}ENDED_TTL_S={self.ended_ttl_s} keeps ended timers in Redis longer than"
                f" {PREFIX}ENDED_RETENTION keeps them in the table ({self.ended_retention_ms} ms); lower it"
            )
        if self.reconcile_sweep_s < self.reconcile_interval_s:
            raise SettingsError(
                f"{PREFIX}RECONCILE_SWEEP_S={self.reconcile_sweep_s} is shorter than {PREFIX}RECONCILE_INTERVAL_S"
                f"={self.reconcile_interval_s}: a sweep takes at least one pass"
            )
        wanted = LONGEST_AUCTION_MS + self.ended_retention_ms
        if self.input_retention_ms != -1 and self.input_retention_ms < wanted:
            raise SettingsError(
                f"{PREFIX}INPUT_RETENTION_MS={self.input_retention_ms} is shorter than the longest auction (366 days)"
                f" plus {PREFIX}ENDED_RETENTION: at least {wanted}, or -1 (forever)"
            )

    def fold_rules(self) -> Rules:
        """What the fold needs from the settings; the worker and replay must use the same."""
        return Rules(self.allowed_lateness_ms, self.ended_retention_ms)

    def _check_kafka_security(self) -> None:
        given: dict[str, object] = {
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            "KAFKA_TLS_CA_FILE": self.kafka_tls_ca_file,
        }
        if self.kafka_security_protocol == "SASL_SSL":
            for name in ("KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD"):
                if not given[name]:
                    raise SettingsError(f"{PREFIX}{name} is required with {PREFIX}KAFKA_SECURITY_PROTOCOL=SASL_SSL")
            return
        for name, value in given.items():
            # Credentials with PLAINTEXT would be a deployment that believes it is authenticated.
            if value:
                raise SettingsError(
                    f"{PREFIX}{name} is set but {PREFIX}KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol}; "
                    f"set it to SASL_SSL to use it"
                )

    def kafka_client_options(self) -> dict[str, Any]:
        """How every Kafka client of this process connects and authenticates, as aiokafka keyword
        arguments (bootstrap servers apart). The one place these settings become client options: the
        Faust app, our producers, consumers and admin clients, replay and the gateway all take these.
        The dict holds the password: pass it to clients, never to a log."""
        if self.kafka_security_protocol == "PLAINTEXT":
            return {"security_protocol": "PLAINTEXT"}
        # The default context verifies the brokers' certificates and host names, TLS 1.2 or newer.
        ca_file = None if self.kafka_tls_ca_file is None else str(self.kafka_tls_ca_file)
        context = ssl.create_default_context(cafile=ca_file)
        return {
            "security_protocol": "SASL_SSL",
            "ssl_context": context,
            "sasl_mechanism": self.kafka_sasl_mechanism,
            "sasl_plain_username": self.kafka_sasl_username,
            "sasl_plain_password": self.kafka_sasl_password,
        }

    def topic_plan(self) -> TopicPlan:
        return TopicPlan(
            self.kafka_bootstrap, self.topic_partitions, self.replication_factor, self.app_id, self.input_retention_ms,
            self.kafka_client_options(),
        )  # fmt: skip

    def redacted(self) -> dict[str, Any]:
        """The settings as a dict for logs, secrets replaced."""
        return {
            f.name: ("***" if f.metadata["secret"] and getattr(self, f.name) else getattr(self, f.name))
            for f in fields(self)
        }


def describe() -> list[tuple[str, str, str]]:
    """(variable, default, meaning) for every setting, in declaration order."""
    return [(f.metadata["env"], f.metadata["raw_default"], f.metadata["doc"]) for f in fields(Settings)]
