"""Dagster in production: runs, event logs and schedule state in PostgreSQL, the daemon beside the webserver.

`eventhouse dagster` runs `dagster-daemon run` (the schedules, the sensor, the run queue) and
`dagster-webserver` on `orchestration.definitions`, both with a DAGSTER_HOME whose dagster.yaml is
deploy/dagster.yaml: dagster-postgres storage at EVENTHOUSE_DAGSTER_POSTGRES_URL
(`settings.dagster_postgres_url`: by default the database `dagster` on the embedded stack's
PostgreSQL, created here when missing). docs/dagster-production.md says how to run it and what to set.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from orchestration.instance import dagster_env
from settings import REPO_ROOT, ConfigError, dagster_postgres_url, eventhouse_home

DAGSTER_YAML_EXAMPLE = REPO_ROOT / "deploy" / "dagster.yaml"
# the variable deploy/dagster.yaml reads the storage's URL from
URL_VARIABLE = "EVENTHOUSE_DAGSTER_POSTGRES_URL"
CODE_LOCATION = ("-m", "orchestration.definitions")


def postgres_dagster_home(env: Mapping[str, str] | None = None) -> Path:
    """The default DAGSTER_HOME of `eventhouse dagster`: `$EVENTHOUSE_HOME/dagster-postgres` (the SQLite
    instance of `eventhouse ui` and the demo is `$EVENTHOUSE_HOME/dagster`)."""
    return eventhouse_home(env) / "dagster-postgres"


def prepare_home(home: Path) -> Path:
    """`home`, created, with deploy/dagster.yaml as its dagster.yaml when it has none (an existing one is
    left as it is, so local changes survive); that file must keep Dagster's storage in PostgreSQL."""
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        shutil.copyfile(DAGSTER_YAML_EXAMPLE, config)
    check_postgres_storage(config)
    return home


def check_postgres_storage(config: Path) -> None:
    """ConfigError unless the dagster.yaml keeps runs, event logs and schedules in PostgreSQL."""
    import yaml

    data = yaml.safe_load(config.read_text()) or {}
    if "postgres" in (data.get("storage") or {}):
        return
    parts = ("run_storage", "event_log_storage", "schedule_storage")
    if all(str((data.get(part) or {}).get("module", "")).startswith("dagster_postgres") for part in parts):
        return
    raise ConfigError(
        f"{config} does not keep Dagster's storage in PostgreSQL (no `storage: postgres:`): "
        f"start from {DAGSTER_YAML_EXAMPLE.relative_to(REPO_ROOT)}"
    )


def libpq_url(url: str) -> str:
    """The SQLAlchemy URL as libpq reads it: `postgresql+psycopg2://` is `postgresql://`."""
    scheme, sep, rest = url.partition("://")
    return f"{scheme.split('+', 1)[0]}{sep}{rest}"


def ensure_database(url: str) -> bool:
    """Create the URL's database on its server when it is missing (Dagster creates its tables, not its
    database); True when it was created. The server unreachable is PostgresUnavailable."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    from oltp.connection import PostgresUnavailable, describe_dsn

    dsn = libpq_url(url)
    database = conninfo_to_dict(dsn).get("dbname") or ""
    try:
        with psycopg.connect(dsn, connect_timeout=5):
            return False
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        if not database or f'database "{database}" does not exist' not in str(exc):
            raise PostgresUnavailable(
                f"PostgreSQL for Dagster at {describe_dsn(dsn)} is not reachable: {reason} (start the embedded "
                f"stack with `eventhouse stack up`, or set {URL_VARIABLE})"
            ) from None
    try:
        with psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True, connect_timeout=5) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
    except psycopg.errors.DuplicateDatabase:  # created by another starter in the meantime
        return False
    except psycopg.Error as exc:
        raise PostgresUnavailable(
            f"the database {database!r} for Dagster does not exist at {describe_dsn(dsn)} and could not be "
            f"created ({str(exc).strip().splitlines()[-1]}): create it, or set {URL_VARIABLE} to one that exists"
        ) from None
    return True


def storage_summary(home: Path, url: str) -> dict[str, str]:
    """Load the instance of `home` as the daemon will, with the storage at `url` (this creates Dagster's
    tables in a new database, once, before two processes race to), and name its storages' classes."""
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    ref = InstanceRef.from_dir(str(home), overrides={"storage": {"postgres": {"postgres_url": url}}})
    with dg.DagsterInstance.from_ref(ref) as instance:
        return {
            "run_storage": type(instance.run_storage).__name__,
            "event_log_storage": type(instance.event_log_storage).__name__,
            "schedule_storage": type(instance.schedule_storage).__name__,
            "run_coordinator": type(instance.run_coordinator).__name__,
            "run_launcher": type(instance.run_launcher).__name__,
        }


def production_env(home: Path, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """`dagster_env` (DAGSTER_HOME=home, this virtualenv first on PATH) with EVENTHOUSE_DAGSTER_POSTGRES_URL
    set as the settings resolve it, for deploy/dagster.yaml to read."""
    base = dagster_env(env, home=home)
    base[URL_VARIABLE] = dagster_postgres_url(base)
    return base


def _tool(name: str) -> str:
    beside = Path(sys.executable).with_name(name)
    return str(beside) if beside.exists() else name


def daemon_argv() -> list[str]:
    return [_tool("dagster-daemon"), "run", *CODE_LOCATION]


def webserver_argv(host: str, port: int) -> list[str]:
    return [_tool("dagster-webserver"), *CODE_LOCATION, "-h", host, "-p", str(port)]


@dataclass
class Child:
    name: str
    process: subprocess.Popen

    def signal_group(self, sig: int) -> None:
        """Send `sig` to the child's process group: it, its code server, the runs it launched."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)

    def live_group(self) -> list[int]:
        """The pids of its process group still running (zombies, only waiting to be reaped, are not)."""
        return live_processes(self.process.pid)


def live_processes(pgid: int) -> list[int]:
    """The processes of process group `pgid` that have not exited (read from /proc)."""
    alive = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:  # it exited meanwhile
            continue
        state, _ppid, group = text.rsplit(")", 1)[1].split()[:3]
        if group == str(pgid) and state not in ("Z", "X"):
            alive.append(int(text.split(" ", 1)[0]))
    return alive


def stop_children(children: list[Child], timeout: float) -> None:
    """SIGTERM each child's process group (the daemon and the webserver stop their code servers, run workers
    mark their runs), wait up to `timeout` s for all of them to exit, then SIGKILL what is left."""
    for child in children:
        child.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for child in children:
        with contextlib.suppress(subprocess.TimeoutExpired):
            child.process.wait(max(0.0, deadline - time.monotonic()))
    while any(child.live_group() for child in children) and time.monotonic() < deadline:
        time.sleep(0.1)
    for child in children:
        if child.live_group():
            child.signal_group(signal.SIGKILL)
        child.process.wait()
    deadline = time.monotonic() + 5.0
    while any(child.live_group() for child in children) and time.monotonic() < deadline:
        time.sleep(0.05)


def run(env: Mapping[str, str], host: str, port: int, stop_timeout: float = 20.0) -> int:
    """The daemon and the webserver with `env` (`production_env`'s) until SIGTERM or SIGINT (then both stop:
    0), or until one of them exits (the other is stopped: 1). Their output is this process's."""
    env = dict(env)
    stop = threading.Event()
    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    children: list[Child] = []
    exited: Child | None = None
    try:
        for name, argv in (("dagster-daemon", daemon_argv()), ("dagster-webserver", webserver_argv(host, port))):
            process = subprocess.Popen(argv, cwd=REPO_ROOT, env=env, start_new_session=True)
            children.append(Child(name, process))
        print(
            f"dagster-daemon pid {children[0].process.pid}, dagster-webserver pid {children[1].process.pid} "
            f"on http://{host}:{port}",
            flush=True,
        )
        while exited is None and not stop.wait(0.5):
            exited = next((child for child in children if child.process.poll() is not None), None)
    finally:
        stop_children(children, stop_timeout)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if exited is not None:
        print(f"error: {exited.name} exited with {exited.process.returncode}; stopped the rest", file=sys.stderr)
        return 1
    print(f"stopped ({signal.Signals(stopped_by[0]).name})", flush=True)
    return 0
