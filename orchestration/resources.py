"""Resources: where ClickHouse and Kafka are (from the EVENTHOUSE_* variables), and dbt.

`EventhouseResource` starts the embedded stack on demand when the configuration points at it
(loopback ClickHouse and Kafka that are not answering); against real servers it only connects.
"""

from __future__ import annotations

from typing import Any

import dagster as dg
from dagster_dbt import DbtCliResource

from orchestration.project import DBT_PROJECT, dbt_executable
from settings import (
    DEFAULT_CLICKHOUSE_PORT,
    DEFAULT_DATABASE,
    DEFAULT_KAFKA_PORT,
    DEFAULT_RAW_DATABASE,
    ClickHouseConfig,
    KafkaConfig,
    Settings,
    eventhouse_home,
    load_settings,
)

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}


class ClickHouseResource(dg.ConfigurableResource):
    """The ClickHouse server (HTTP interface) the loader writes to and dbt builds in."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_CLICKHOUSE_PORT
    user: str = "default"
    password: str = ""
    database: str = DEFAULT_DATABASE
    raw_database: str = DEFAULT_RAW_DATABASE
    secure: bool = False

    def config(self) -> ClickHouseConfig:
        return ClickHouseConfig(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=self.database,
            secure=self.secure,
            raw_database=self.raw_database,
        )


class KafkaResource(dg.ConfigurableResource):
    """The Kafka cluster the producers publish to and the loader consumes from."""

    bootstrap: str = f"127.0.0.1:{DEFAULT_KAFKA_PORT}"
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None

    def config(self) -> KafkaConfig:
        return KafkaConfig(
            bootstrap=self.bootstrap,
            security_protocol=self.security_protocol,
            sasl_mechanism=self.sasl_mechanism,
            sasl_username=self.sasl_username,
            sasl_password=self.sasl_password,
            ssl_cafile=self.ssl_cafile,
        )


def points_at_embedded_stack(settings: Settings) -> bool:
    """True when both ClickHouse and Kafka are configured on this machine's loopback."""
    kafka_hosts = {server.rsplit(":", 1)[0].strip("[]") for server in settings.kafka.bootstrap.split(",")}
    return settings.clickhouse.is_embedded_default and kafka_hosts <= _LOOPBACK and len(kafka_hosts) == 1


def ensure_embedded_stack(settings: Settings, log: Any = None) -> bool:
    """Start the embedded stack if the settings point at it and it is not answering; True if started."""
    from stack.lifecycle import EmbeddedStack, clickhouse_ready, kafka_ready

    if not points_at_embedded_stack(settings):
        return False
    if clickhouse_ready(settings.clickhouse.port) and kafka_ready(settings.kafka.port):
        return False
    stack = EmbeddedStack(settings.home, settings.clickhouse.port, settings.kafka.port, settings.clickhouse.database)
    if log is not None:
        log.info(
            f"starting the embedded stack in {settings.home} (ClickHouse :{settings.clickhouse.port}, "
            f"Kafka :{settings.kafka.port})"
        )
    stack.up()
    return True


class EventhouseResource(dg.ConfigurableResource):
    """ClickHouse + Kafka as one resource; starts the embedded stack on demand."""

    clickhouse: ClickHouseResource
    kafka: KafkaResource
    home: str
    start_embedded_stack: bool = True

    def settings(self) -> Settings:
        from pathlib import Path

        return Settings(clickhouse=self.clickhouse.config(), kafka=self.kafka.config(), home=Path(self.home))

    def ensure_stack(self, log: Any = None) -> Settings:
        settings = self.settings()
        if self.start_embedded_stack:
            ensure_embedded_stack(settings, log)
        return settings

    def client(self, **overrides: Any) -> Any:
        """A clickhouse-connect client (stack started if needed); name tables with their database.

        It connects to `default`, as the loader does: the warehouse database exists only once dbt made it.
        """
        import clickhouse_connect

        settings = self.ensure_stack()
        return clickhouse_connect.get_client(
            **{**settings.clickhouse.client_kwargs(), "database": "default", **overrides}
        )


class EventhouseDbtCliResource(DbtCliResource):
    """DbtCliResource without the dbt adapter it opens in Dagster's own process for each invocation.

    That adapter serves only fetch_row_counts()/fetch_column_metadata(), which eventhouse does not use
    (assets/dbt.py reads row counts from system.tables); opening it loads the whole dbt project again,
    about 10 s per invocation on a 2-core machine, and a run makes several invocations.
    """

    def _initialize_dbt_core_adapter(self, args: Any) -> None:  # type: ignore[override]
        return None


def build_resources(env: dict[str, str] | None = None) -> dict[str, Any]:
    """The resources from the same EVENTHOUSE_* variables every other component reads."""
    settings = load_settings(env)
    ch, kafka = settings.clickhouse, settings.kafka
    clickhouse = ClickHouseResource(
        host=ch.host,
        port=ch.port,
        user=ch.user,
        # secrets stay out of the UI's resource config: EnvVar is resolved at run time
        password=dg.EnvVar("EVENTHOUSE_CLICKHOUSE_PASSWORD") if ch.password else "",
        database=ch.database,
        raw_database=ch.raw_database,
        secure=ch.secure,
    )
    kafka_resource = KafkaResource(
        bootstrap=kafka.bootstrap,
        security_protocol=kafka.security_protocol,
        sasl_mechanism=kafka.sasl_mechanism,
        sasl_username=kafka.sasl_username,
        sasl_password=dg.EnvVar("EVENTHOUSE_KAFKA_SASL_PASSWORD") if kafka.sasl_password else None,
        ssl_cafile=kafka.ssl_cafile,
    )
    return {
        "eventhouse": EventhouseResource(clickhouse=clickhouse, kafka=kafka_resource, home=str(eventhouse_home(env))),
        # the venv's dbt, also when the venv is not on PATH (make runs .venv/bin/eventhouse directly)
        "dbt": EventhouseDbtCliResource(project_dir=DBT_PROJECT, dbt_executable=dbt_executable()),
    }
