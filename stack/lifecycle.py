"""`eventhouse stack up|down|status`: the embedded ClickHouse, Kafka and PostgreSQL as background services.

Layout under $EVENTHOUSE_HOME (default `.eventhouse/` in the repository):

    clickhouse/          chDB data directory (owned by the ClickHouse HTTP server process)
    user_files/          the only place file() and File engines read and write (the server's working directory)
    postgres/            the PostgreSQL cluster (wal_level=logical; owned by `postgres` when started by root)
    user_files/archive/  the raw archive (hourly Parquet); `archive` beside it is a symbolic link to it
    run/*.pid            pidfiles
    logs/*.log           service logs
    stack.json           ports, cluster id, listen host and external access of the running stack
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import socket
import struct
import sys
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path

from settings import DEFAULT_CLICKHOUSE_PORT, DEFAULT_DATABASE, DEFAULT_KAFKA_PORT, DEFAULT_POSTGRES_PORT
from stack.kafka_broker import broker_argv
from stack.postgres import PostgresCluster, ensure_database, postgres_ready
from stack.processes import Service, ServiceError, port_is_free

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackLayout:
    home: Path

    @property
    def clickhouse_data(self) -> Path:
        return self.home / "clickhouse"

    @property
    def postgres_data(self) -> Path:
        return self.home / "postgres"

    @property
    def user_files(self) -> Path:
        return self.home / "user_files"

    @property
    def archive_link(self) -> Path:
        return self.home / "archive"

    @property
    def run_dir(self) -> Path:
        return self.home / "run"

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    @property
    def state_file(self) -> Path:
        return self.home / "stack.json"


@dataclass
class StackState:
    clickhouse_port: int
    kafka_port: int
    kafka_cluster_id: str
    started_at: float
    # How the ClickHouse server was started (older stack.json files lack them: the defaults).
    listen_host: str = "127.0.0.1"
    allow_external_access: bool = False
    postgres_port: int = DEFAULT_POSTGRES_PORT


def probe_host(listen_host: str) -> str:
    """The address that reaches a server listening on `listen_host` (wildcards: loopback)."""
    return "127.0.0.1" if listen_host in ("", "0.0.0.0", "::") else listen_host


def clickhouse_ready(port: int, host: str = "127.0.0.1") -> bool:
    try:
        address = f"[{host}]" if ":" in host else host
        with urllib.request.urlopen(f"http://{address}:{port}/ping", timeout=1.0) as response:
            return response.status == 200 and response.read().strip() == b"Ok."
    except OSError:
        return False


def kafka_ready(port: int, host: str = "127.0.0.1", timeout: float = 1.0) -> bool:
    """True when the broker answers a Kafka Metadata request (v0, all topics).

    A raw request with a socket timeout: kafka-python's clients retry a missing
    broker for a long time, which is wrong for a readiness probe.
    """
    client_id = b"eventhouse-readiness"
    correlation_id = 0x5EED
    body = struct.pack(">hhih", 3, 0, correlation_id, len(client_id)) + client_id + struct.pack(">i", 0)
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(struct.pack(">i", len(body)) + body)
            header = b""
            while len(header) < 8:
                chunk = sock.recv(8 - len(header))
                if not chunk:
                    return False
                header += chunk
    except OSError:
        return False
    size, answered_id = struct.unpack(">ii", header)
    return size >= 4 and answered_id == correlation_id


class EmbeddedStack:
    """The three embedded services for one EVENTHOUSE_HOME."""

    def __init__(
        self,
        home: Path,
        clickhouse_port: int = DEFAULT_CLICKHOUSE_PORT,
        kafka_port: int = DEFAULT_KAFKA_PORT,
        database: str = DEFAULT_DATABASE,
        *,
        listen_host: str = "127.0.0.1",
        allow_external_access: bool = False,
        postgres_port: int = DEFAULT_POSTGRES_PORT,
    ):
        self.layout = StackLayout(home.resolve())
        self.clickhouse_port = clickhouse_port
        self.kafka_port = kafka_port
        self.database = database
        self.listen_host = listen_host
        self.allow_external_access = allow_external_access
        self.postgres_port = postgres_port

    def _clickhouse(self, port: int, listen_host: str, allow_external_access: bool) -> Service:
        layout = self.layout
        host = probe_host(listen_host)
        return Service(
            name="ClickHouse (chDB HTTP server)",
            argv=[
                sys.executable,
                "-m",
                "eventhouse.cli",
                "stack",
                "clickhouse",
                "--home",
                str(layout.home),
                "--clickhouse-port",
                str(port),
                "--database",
                self.database,
                "--listen-host",
                listen_host,
                *(["--allow-external-access"] if allow_external_access else []),
            ],
            pidfile=layout.run_dir / "clickhouse.pid",
            logfile=layout.log_dir / "clickhouse.log",
            ready=lambda: clickhouse_ready(port, host),
        )

    def _kafka(self, port: int, cluster_id: str) -> Service:
        layout = self.layout
        return Service(
            name="Kafka (Tansu broker)",
            argv=broker_argv(port, cluster_id),
            pidfile=layout.run_dir / "kafka.pid",
            logfile=layout.log_dir / "kafka.log",
            ready=lambda: kafka_ready(port),
        )

    def _postgres(self, port: int) -> Service:
        layout = self.layout
        cluster = PostgresCluster(layout.postgres_data, port)
        return Service(
            name="PostgreSQL",
            argv=cluster.server_argv(),
            pidfile=layout.run_dir / "postgres.pid",
            logfile=layout.log_dir / "postgres.log",
            ready=lambda: postgres_ready(port),
            popen_kwargs=cluster.popen_kwargs(),
            stop_signal=signal.SIGINT,
        )

    def read_state(self) -> StackState | None:
        try:
            return StackState(**json.loads(self.layout.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def services(self) -> tuple[Service, Service, Service]:
        state = self.read_state()
        pg_port = state.postgres_port if state else self.postgres_port
        ch_port = state.clickhouse_port if state else self.clickhouse_port
        kafka_port = state.kafka_port if state else self.kafka_port
        cluster = state.kafka_cluster_id if state else ""
        listen_host = state.listen_host if state else self.listen_host
        external = state.allow_external_access if state else self.allow_external_access
        return (
            self._clickhouse(ch_port, listen_host, external),
            self._kafka(kafka_port, cluster),
            self._postgres(pg_port),
        )

    def up(self, timeout: float = 90.0) -> StackState:
        """Start whatever is not running yet; idempotent."""
        layout = self.layout
        for path in (layout.clickhouse_data, layout.run_dir, layout.log_dir, layout.user_files / "archive"):
            path.mkdir(parents=True, exist_ok=True)
        # The raw archive lives under user_files (ClickHouse writes files only there); $HOME/archive
        # is where people look for it.
        if not layout.archive_link.exists() and not layout.archive_link.is_symlink():
            layout.archive_link.symlink_to(Path("user_files") / "archive", target_is_directory=True)
        state = self.read_state()
        clickhouse_running, kafka_running, postgres_running = (s.running_pid() is not None for s in self.services())
        if state and (clickhouse_running or kafka_running or postgres_running):
            ports = (state.clickhouse_port, state.kafka_port, state.postgres_port)
            if ports != (self.clickhouse_port, self.kafka_port, self.postgres_port):
                raise ServiceError(
                    f"The stack in {layout.home} is already running on ClickHouse port {state.clickhouse_port}, "
                    f"Kafka port {state.kafka_port} and PostgreSQL port {state.postgres_port}; stop it first "
                    "(`eventhouse stack down`) to change ports."
                )
            wanted = (self.listen_host, self.allow_external_access)
            if clickhouse_running and (state.listen_host, state.allow_external_access) != wanted:
                # `up` is idempotent (demo and `stack run` call it too): the running server stays as it is.
                log.warning(
                    "The ClickHouse server in %s keeps running as started (listening on %s, external access %s); "
                    "stop it (`eventhouse stack down`) to change --listen-host or --allow-external-access.",
                    layout.home,
                    state.listen_host,
                    "allowed" if state.allow_external_access else "refused",
                )
        else:
            state = StackState(
                clickhouse_port=self.clickhouse_port,
                kafka_port=self.kafka_port,
                kafka_cluster_id=f"eventhouse-{secrets.token_hex(6)}",
                started_at=time.time(),
                postgres_port=self.postgres_port,
            )
        if not clickhouse_running:
            state.listen_host, state.allow_external_access = self.listen_host, self.allow_external_access
        checks = []
        if not clickhouse_running:
            # port_is_free probes IPv4: an IPv6 listen address is checked on loopback.
            bind = "127.0.0.1" if ":" in state.listen_host else state.listen_host or "0.0.0.0"
            checks.append(("ClickHouse", bind, state.clickhouse_port, "--clickhouse-port"))
        if not kafka_running:
            checks.append(("Kafka", "127.0.0.1", state.kafka_port, "--kafka-port"))
        if not postgres_running:
            checks.append(("PostgreSQL", "127.0.0.1", state.postgres_port, "--postgres-port"))
        for name, host, port, flag in checks:
            if not port_is_free(host, port):
                raise ServiceError(
                    f"Cannot start the embedded {name}: port {port} on {host} is already in use by another "
                    f"process. Free it or choose another port ({flag})."
                )
        if not kafka_running:
            # A fresh broker is a new cluster: consumers can tell its offsets from the last one's.
            state.kafka_cluster_id = f"eventhouse-{secrets.token_hex(6)}"
            state.started_at = time.time()
        layout.state_file.write_text(json.dumps(asdict(state), indent=2) + "\n")
        clickhouse = self._clickhouse(state.clickhouse_port, state.listen_host, state.allow_external_access)
        kafka = self._kafka(state.kafka_port, state.kafka_cluster_id)
        postgres = self._postgres(state.postgres_port)
        started: list[Service] = []
        try:
            if not postgres_running:
                # initdb (about half a second, once) before ClickHouse starts: a failure costs nothing to undo
                PostgresCluster(layout.postgres_data, state.postgres_port).initialise()
            for service, running in (
                (clickhouse, clickhouse_running),
                (kafka, kafka_running),
                (postgres, postgres_running),
            ):
                if not running:
                    service.start(timeout=timeout)
                    started.append(service)
            ensure_database(state.postgres_port)
        except (ServiceError, OSError):
            for service in started:
                service.stop()
            raise
        return state

    def down(self) -> list[str]:
        """Stop the services (ClickHouse on SIGTERM, PostgreSQL on SIGINT: both cleanly); returns what was stopped."""
        stopped = [service.name for service in self.services() if service.stop()]
        self.layout.state_file.unlink(missing_ok=True)
        return stopped

    def status(self) -> dict[str, object]:
        state = self.read_state()
        clickhouse, kafka, postgres = self.services()
        result: dict[str, object] = {"home": str(self.layout.home)}
        for key, service, ready in (
            (
                "clickhouse",
                clickhouse,
                lambda: state is not None and clickhouse_ready(state.clickhouse_port, probe_host(state.listen_host)),
            ),
            ("kafka", kafka, lambda: state is not None and kafka_ready(state.kafka_port)),
            ("postgres", postgres, lambda: state is not None and postgres_ready(state.postgres_port)),
        ):
            pid = service.running_pid()
            result[key] = {
                "pid": pid,
                "port": getattr(state, f"{key}_port", None),
                "state": "ready" if pid and ready() else ("starting or unhealthy" if pid else "stopped"),
                "log": str(service.logfile),
            }
        if state:
            result["kafka_cluster_id"] = state.kafka_cluster_id
        return result
