"""The embedded PostgreSQL: the orders service's OLTP database, third service of the embedded stack.

Debian's PostgreSQL 15 server binaries (package postgresql-15; `make` installs it when missing)
run a cluster in `$EVENTHOUSE_HOME/postgres`, listening on 127.0.0.1 only (no Unix socket), with
`wal_level=logical` so CDC can read a logical replication slot. Host connections from loopback
are trusted, as the embedded ClickHouse's default user is: the stack is a laptop's, and nothing
listens beyond 127.0.0.1. A real server is configuration: EVENTHOUSE_POSTGRES_DSN.

PostgreSQL refuses to run as root. Started by root, the server runs as the unprivileged `postgres`
system user (or `nobody`), which then owns the data directory; directories above it get the search
bit (o+x, not read) so that user can reach it, and the log says so.
"""

from __future__ import annotations

import logging
import os
import pwd
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from settings import DEFAULT_POSTGRES_DATABASE, DEFAULT_POSTGRES_USER, postgres_bin_dir
from stack.processes import ServiceError

log = logging.getLogger(__name__)

UNPRIVILEGED_USERS = ("postgres", "nobody")


def server_user() -> str | None:
    """The user the server runs as: None (ourselves) unless we are root."""
    if os.geteuid() != 0:
        return None
    for name in UNPRIVILEGED_USERS:
        try:
            pwd.getpwnam(name)
        except KeyError:
            continue
        return name
    raise ServiceError("PostgreSQL refuses to run as root and no unprivileged user (postgres, nobody) exists")


def binary(name: str) -> str:
    path = postgres_bin_dir() / name
    if not os.access(path, os.X_OK):
        raise ServiceError(
            f"PostgreSQL's {name} is not at {path}: install the server (apt-get install postgresql-15; "
            "`make` does it) or set EVENTHOUSE_POSTGRES_BIN to the directory holding initdb and postgres"
        )
    return str(path)


def _as_user(user: str | None) -> dict[str, object]:
    """Popen arguments that run a child as `user` (nothing when None)."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _grant_search(path: Path, user: str) -> None:
    """Let `user` reach `path`: the search bit on every directory above it that lacks it."""
    for directory in reversed(path.parents):
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.warning(
                "granting search permission (o+x) on %s so the unprivileged %r user can reach %s", directory, user, path
            )
            directory.chmod(mode | stat.S_IXOTH)


@dataclass(frozen=True)
class PostgresCluster:
    data_dir: Path
    port: int

    def server_argv(self) -> list[str]:
        return [
            binary("postgres"),
            "-D",
            str(self.data_dir),
            "-p",
            str(self.port),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "unix_socket_directories=",
            "-c",
            "wal_level=logical",
            "-c",
            "max_replication_slots=10",
            "-c",
            "max_wal_senders=10",
            "-c",
            "shared_buffers=64MB",
        ]

    def popen_kwargs(self) -> dict[str, object]:
        return _as_user(server_user())

    def initialise(self) -> bool:
        """Create the cluster once (initdb); False when it already exists."""
        if (self.data_dir / "PG_VERSION").exists():
            return False
        user = server_user()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if user is not None:
            log.warning("running as root: PostgreSQL will run as the unprivileged user %r", user)
            entry = pwd.getpwnam(user)
            os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            _grant_search(self.data_dir, user)
        self.data_dir.chmod(0o700)
        result = subprocess.run(
            [
                binary("initdb"),
                "-D",
                str(self.data_dir),
                "-U",
                DEFAULT_POSTGRES_USER,
                "--auth-host=trust",
                "--auth-local=reject",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            ],
            capture_output=True,
            text=True,
            **_as_user(user),  # type: ignore[arg-type]
        )
        if result.returncode != 0:
            raise ServiceError(f"initdb failed in {self.data_dir}:\n{result.stdout}{result.stderr}")
        return True


def connect_dsn(port: int, database: str = DEFAULT_POSTGRES_DATABASE, host: str = "127.0.0.1") -> str:
    return f"postgresql://{DEFAULT_POSTGRES_USER}@{host}:{port}/{database}"


def postgres_ready(port: int, host: str = "127.0.0.1") -> bool:
    """True when the server accepts a connection to its maintenance database."""
    import psycopg

    try:
        with psycopg.connect(connect_dsn(port, "postgres", host), connect_timeout=1):
            return True
    except psycopg.Error:
        return False


def ensure_database(port: int, database: str = DEFAULT_POSTGRES_DATABASE) -> bool:
    """Create the application database once; True when it was created."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(connect_dsn(port, "postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (database,)).fetchone():
            return False
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
        return True
