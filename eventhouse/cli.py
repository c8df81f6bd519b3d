"""The `eventhouse` command."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from settings import (
    DEFAULT_ALERT_POLL_SECONDS,
    DEFAULT_BATCH_BYTES,
    DEFAULT_BATCH_ROWS,
    DEFAULT_BATCH_SECONDS,
    DEFAULT_DATABASE,
    DEFAULT_LOADER_GROUP_ID,
    DEFAULT_METRICS_HOST,
    DEFAULT_OUTBOX_BATCH_ROWS,
    DEFAULT_OUTBOX_POLL_SECONDS,
    DEFAULT_OUTBOX_WRITER_CONNECTIONS,
    DEFAULT_POSTGRES_PORT,
    DEFAULT_RAW_DATABASE,
    DEFAULT_RETRY_MAX_SLEEP_SECONDS,
    REPO_ROOT,
    load_settings,
    postgres_dsn,
    stack_env,
)


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error as one line (`--help` still shows the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _port_or_zero(text: str) -> int:
    """A port number, or 0 for one the system picks."""
    if text.strip() == "0":
        return 0
    try:
        return _port(text)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535; 0 picks a free one)") from None


def _home(text: str) -> Path:
    path = Path(text).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a directory")
    return path


def _number(kind: type, low: float, *, above: bool = False) -> Callable[[str], float]:
    """An argparse type: a number of `kind` at least `low` (or above it)."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'a whole number' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if value < low or (above and value == low) or value != value:  # value != value: NaN
            raise argparse.ArgumentTypeError(
                f"expected a number {'above' if above else 'of at least'} {low:g}, got {text}"
            )
        return value

    return parse


_positive_int = _number(int, 1)
_positive_float = _number(float, 0, above=True)
_non_negative_float = _number(float, 0)


def _metrics_server(metrics: Any, args: argparse.Namespace) -> Any:
    """The Prometheus endpoint of --metrics-port/--metrics-host (None without a port); a clear error
    when the address cannot be listened on."""
    if args.metrics_port is None:
        return None
    from ingestion.loader_metrics import MetricsServer

    try:
        return MetricsServer(metrics, args.metrics_port, args.metrics_host)
    except OSError as exc:  # the port is taken, or the host is not this machine's
        raise InputError(f"--metrics-port {args.metrics_port}: cannot listen on {args.metrics_host}: {exc}") from None


def _postgres_port_default() -> int:
    from psycopg.conninfo import conninfo_to_dict

    port = conninfo_to_dict(postgres_dsn()).get("port")
    return int(port) if port else DEFAULT_POSTGRES_PORT


def _add_stack_options(parser: argparse.ArgumentParser) -> None:
    settings = load_settings()
    parser.add_argument("--home", type=_home, default=settings.home, help="data, pidfiles and logs (EVENTHOUSE_HOME)")
    parser.add_argument(
        "--clickhouse-port",
        type=_port,
        default=settings.clickhouse.port,
        help="ClickHouse HTTP port (default %(default)s)",
    )
    parser.add_argument(
        "--kafka-port", type=_port, default=settings.kafka.port, help="Kafka port (default %(default)s)"
    )
    parser.add_argument(
        "--postgres-port",
        type=_port,
        default=_postgres_port_default(),
        help="PostgreSQL port (default %(default)s, or EVENTHOUSE_POSTGRES_DSN's)",
    )
    parser.add_argument(
        "--listen-host",
        default="127.0.0.1",
        help="address the ClickHouse server listens on (default %(default)s; any other needs "
        "EVENTHOUSE_CLICKHOUSE_PASSWORD)",
    )
    parser.add_argument(
        "--allow-external-access",
        action="store_true",
        help="let SQL reach other hosts (url(), s3(), remote(), Kafka/URL engines, network dictionaries); "
        "refused by default",
    )


def _stack(args: argparse.Namespace):
    from stack.lifecycle import EmbeddedStack

    return EmbeddedStack(
        args.home,
        args.clickhouse_port,
        args.kafka_port,
        load_settings().clickhouse.database,
        listen_host=args.listen_host,
        allow_external_access=args.allow_external_access,
        postgres_port=args.postgres_port,
    )


def cmd_stack_up(args: argparse.Namespace) -> int:
    stack = _stack(args)
    print(f"Starting the embedded stack in {stack.layout.home} ...", flush=True)
    state = stack.up()
    external = "allowed" if state.allow_external_access else "refused"
    print(
        f"ClickHouse  http://{state.listen_host}:{state.clickhouse_port}  (data: {stack.layout.clickhouse_data}, "
        f"files: {stack.layout.user_files}, external access {external})"
    )
    print(f"Kafka       127.0.0.1:{state.kafka_port}  (in memory; cluster id {state.kafka_cluster_id})")
    env = stack_env(state.clickhouse_port, state.kafka_port, stack.layout.home, state.postgres_port)
    print(f"PostgreSQL  {env['EVENTHOUSE_POSTGRES_DSN']}  (data: {stack.layout.postgres_data}, wal_level=logical)")
    print(f"Logs        {stack.layout.log_dir}")
    print("Stop it with: eventhouse stack down")
    return 0


def cmd_stack_down(args: argparse.Namespace) -> int:
    stopped = _stack(args).down()
    print("Stopped: " + ", ".join(stopped) if stopped else "Nothing was running.")
    return 0


def cmd_stack_status(args: argparse.Namespace) -> int:
    status = _stack(args).status()
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        print(f"home: {status['home']}")
        for key in ("clickhouse", "kafka", "postgres"):
            info = status[key]
            print(f"{key:<11} {info['state']:<22} port={info['port']} pid={info['pid']} log={info['log']}")
    ready = all(status[key]["state"] == "ready" for key in ("clickhouse", "kafka", "postgres"))
    return 0 if ready else 3


def cmd_stack_clickhouse(args: argparse.Namespace) -> int:
    """Foreground ClickHouse HTTP server (what `stack up` runs in the background)."""
    from stack.chdb_engine import DataDirectoryInUse
    from stack.clickhouse_server import InsecureBinding, PortInUse, ServerOptions, serve

    settings = load_settings()
    options = ServerOptions(
        data_dir=(args.home / "clickhouse").resolve(),
        host=args.listen_host,
        port=args.clickhouse_port,
        user=settings.clickhouse.user,
        password=settings.clickhouse.password,
        ensure_databases=(args.database,),
        user_files_path=(args.home / "user_files").resolve(),
        allow_external_access=args.allow_external_access,
    )
    try:
        serve(options)
    except (DataDirectoryInUse, PortInUse, InsecureBinding) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_stack_kafka(args: argparse.Namespace) -> int:
    """Foreground Tansu broker."""
    from stack.kafka_broker import broker_argv

    argv = broker_argv(args.kafka_port, args.cluster_id)
    os.execv(argv[0], argv)
    return 0  # not reached


def cmd_stack_run(args: argparse.Namespace) -> int:
    """Run a command with EVENTHOUSE_* pointing at an embedded stack."""
    from stack.lifecycle import EmbeddedStack
    from stack.processes import free_port

    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("error: give a command after --, e.g. eventhouse stack run -- dbt build", file=sys.stderr)
        return 2
    temp_home = None
    if args.ephemeral:
        temp_home = Path(tempfile.mkdtemp(prefix="eventhouse-"))
        stack = EmbeddedStack(
            temp_home,
            free_port(),
            free_port(),
            load_settings().clickhouse.database,
            listen_host=args.listen_host,
            allow_external_access=args.allow_external_access,
            postgres_port=free_port(),
        )
    else:
        stack = _stack(args)
    try:
        state = stack.up()
        env = dict(os.environ)
        env.update(stack_env(state.clickhouse_port, state.kafka_port, stack.layout.home, state.postgres_port))
        env.setdefault("DBT_PROFILES_DIR", str(REPO_ROOT))
        return subprocess.call(command, env=env)
    finally:
        if temp_home is not None:
            stack.down()
            shutil.rmtree(temp_home, ignore_errors=True)


def cmd_demo(args: argparse.Namespace) -> int:
    from eventhouse.demo import run_demo

    return run_demo(_stack(args))


def cmd_ui(args: argparse.Namespace) -> int:
    """`eventhouse serve` (the API and the dashboards) beside `dagster dev` on orchestration/definitions.py
    with DAGSTER_HOME = $EVENTHOUSE_HOME/dagster (the demo's runs), until Ctrl-C."""
    from orchestration.instance import dagster_env
    from serving.process import running_server

    env = dict(os.environ)
    if args.home is not None:
        env["EVENTHOUSE_HOME"] = str(args.home.expanduser().resolve())
    env = dagster_env(env)
    beside = Path(sys.executable).with_name("dagster")
    dagster = str(beside) if beside.exists() else "dagster"
    argv = [dagster, "dev", "-m", "orchestration.definitions", "-h", args.host, "-p", str(args.port)]
    log_dir = load_settings(env).home / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    with running_server(env, args.api_port, log_dir / "serve.log", "--host", args.host) as api:
        print(f"KPI API on {api} (docs {api}/docs), dashboards on {api}/dashboards/ (log: {log_dir / 'serve.log'})")
        print(f"Dagster UI on http://{args.host}:{args.port} (DAGSTER_HOME={env['DAGSTER_HOME']})", flush=True)
        try:
            return subprocess.run(argv, env=env, cwd=REPO_ROOT).returncode
        except KeyboardInterrupt:
            return 130


def cmd_dagster(args: argparse.Namespace) -> int:
    """Dagster as production runs it: the daemon (schedules, the sensor, the run queue) and the webserver, with
    runs, event logs and schedule state in PostgreSQL (deploy/dagster.yaml), until SIGTERM or Ctrl-C."""
    from oltp.connection import describe_dsn
    from orchestration import production

    logging.getLogger("alembic").setLevel(logging.WARNING)  # its migration chatter when Dagster's tables are made
    home = production.prepare_home(args.dagster_home or production.postgres_dagster_home())
    env = production.production_env(home)
    url = env[production.URL_VARIABLE]
    where = describe_dsn(production.libpq_url(url))
    if production.ensure_database(url):
        print(f"created the database for Dagster: {where}", flush=True)
    storage = production.storage_summary(home, url)
    print(f"DAGSTER_HOME={home}; storage in PostgreSQL at {where}: " + json.dumps(storage), flush=True)
    if args.prepare:
        from orchestration.project import prepare_dbt_project

        print(f"prepared {prepare_dbt_project()}", flush=True)
    return production.run(env, args.host, args.port)


def cmd_serve(args: argparse.Namespace) -> int:
    """The collector, the KPI API and the dashboards (FastAPI under uvicorn) until SIGTERM/SIGINT."""
    import uvicorn

    from serving.app import create_app
    from settings import serve_settings

    serve = serve_settings(host=args.host, port=args.port)  # ConfigError: not loopback and no key
    app = create_app(load_settings(), serve)
    where = f"http://{serve.host}:{serve.port}"
    print(
        f"KPI API on {where} (OpenAPI docs {where}/docs), dashboards on {where}/dashboards/, "
        f"collector POST {where}/api/v1/events" + ("; API key required" if serve.api_key else ""),
        flush=True,
    )
    uvicorn.run(app, host=serve.host, port=serve.port, log_level="warning", access_log=False)
    return 0


def _without_option(argv: list[str], option: str) -> list[str]:
    """The command line without `option VALUE` / `option=VALUE`."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            kept.append(arg)
    return kept


def _load_with_workers(args: argparse.Namespace) -> int:
    """`eventhouse load --workers N`: N loader processes in one consumer group, each loading the
    partitions the group assigns it (one process is bound to one core: kafka-python's decoding and
    our validation are CPU work). SIGTERM/SIGINT reach every worker; the summaries are summed."""
    import signal

    argv = _without_option(_without_option(sys.argv[1:], "--workers"), "--metrics-port")
    workers = []
    for index in range(args.workers):
        worker_argv = list(argv)
        if args.metrics_port is not None:  # each worker on a port of its own: PORT, PORT+1, ... (0: any)
            worker_argv += ["--metrics-port", str(args.metrics_port + index if args.metrics_port else 0)]
        workers.append(
            subprocess.Popen([sys.executable, "-m", "eventhouse.cli", *worker_argv], stdout=subprocess.PIPE, text=True)
        )

    def forward(signum: int, _frame: Any) -> None:
        for worker in workers:
            if worker.poll() is None:
                worker.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, forward)
    outputs = [worker.communicate()[0] for worker in workers]
    summaries = []
    for index, (worker, output) in enumerate(zip(workers, outputs, strict=True)):
        start = output.rfind("\n{") + 1
        if worker.returncode != 0 or not output[start:].startswith("{"):
            print(f"error: loader worker {index + 1}/{args.workers} exited with {worker.returncode}", file=sys.stderr)
            return worker.returncode or 1
        summaries.append(json.loads(output[start:]))
    total = {
        key: sum(summary[key] for summary in summaries)
        for key in ("rows_loaded", "dead_letters", "duplicates_collapsed", "messages", "batches")
    }
    elapsed = max(summary["elapsed_s"] for summary in summaries)
    total["rows_per_s"] = round(total["messages"] / max(elapsed, 1e-9), 1)
    print(json.dumps({"workers": args.workers, **total, "elapsed_s": elapsed, "per_worker": summaries}, indent=2))
    return 0


def cmd_load(args: argparse.Namespace) -> int:
    from ingestion.loader import Loader, LoaderConfig

    if args.workers > 1 and not args.create_tables_only:
        return _load_with_workers(args)
    settings = load_settings()
    if args.raw_database is None:
        args.raw_database = settings.clickhouse.raw_database
    if args.print_ddl:  # what --create-tables-only would run, for EVENTHOUSE_CLICKHOUSE_CLUSTER if set
        from ingestion.raw_tables import create_statements
        from settings import clickhouse_cluster

        statements = create_statements(args.raw_database, args.ttl_days, clickhouse_cluster())
        print(";\n\n".join(statement.strip() for statement in statements) + ";")
        return 0
    if args.create_tables_only:
        import clickhouse_connect

        from ingestion.raw_tables import ensure_tables

        client = clickhouse_connect.get_client(**{**settings.clickhouse.client_kwargs(), "database": "default"})
        ensure_tables(client, args.raw_database, args.ttl_days)
        print(f"raw tables ready in `{args.raw_database}`")
        return 0
    config = LoaderConfig(
        domains=tuple(args.domains),
        group_id=args.group_id,
        raw_database=args.raw_database,
        batch_rows=args.batch_rows,
        batch_bytes=args.batch_bytes,
        batch_seconds=args.batch_seconds,
        until_caught_up=args.until_caught_up,
        max_seconds=args.max_seconds,
        session_timeout_ms=args.session_timeout_ms or settings.kafka.session_timeout_ms,
        ttl_days=args.ttl_days,
        fetch_max_bytes=args.fetch_max_bytes,
        partition_fetch_bytes=args.partition_fetch_bytes,
        cdc=args.cdc,  # CDC topics (eventhouse cdc) too, unless --no-cdc
    )
    if args.retry_max_sleep is not None:
        config.retry_max_sleep = args.retry_max_sleep
    from ingestion.loader_metrics import LoaderMetrics

    metrics = LoaderMetrics()
    server = _metrics_server(metrics, args)
    try:
        stats = Loader(settings, config, metrics=metrics).run()
    finally:
        if server is not None:
            server.close()
    print(json.dumps(stats.summary(), indent=2))
    return 0


def cmd_alerts(args: argparse.Namespace) -> int:
    import signal

    from alerting.metrics import AlertMetrics
    from alerting.publisher import AlertPublisher
    from settings import alert_settings

    settings = load_settings()
    config = alert_settings()
    if args.interval is not None:
        config = dataclasses.replace(config, poll_seconds=args.interval)
    if args.webhook is not None and not args.webhook.startswith(("http://", "https://")):
        raise InputError(f"--webhook {args.webhook}: not an http:// or https:// URL")
    metrics = AlertMetrics()
    server = _metrics_server(metrics, args)
    try:
        publisher = AlertPublisher(
            settings, config, webhook_url=args.webhook, metrics=metrics, pipeline_checks=not args.no_pipeline
        )
        try:
            # SIGTERM and SIGINT end the loop after the current delivery; the state stays consistent
            # even without this (kill -9 is tested), this only makes the exit quiet and quick.
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: publisher.stop())
            summary = publisher.run(once=args.once)
        finally:
            publisher.close()
    finally:
        if server is not None:
            server.close()
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def _input_file(path: Path, option: str) -> Path:
    if not path.exists():
        raise InputError(f"{option} {path}: no such file")
    if not path.is_file():
        raise InputError(f"{option} {path}: not a file")
    return path


class InputError(ValueError):
    """An input file or option the command cannot use."""


SAMPLES_DIR = REPO_ROOT / "ingestion" / "samples"


def cmd_produce_yoochoose(args: argparse.Namespace) -> int:
    from ingestion.producers.yoochoose import MalformedLine, replay
    from ingestion.publisher import Publisher

    clicks = _input_file(Path(args.clicks), "--clicks")
    buys = _input_file(Path(args.buys), "--buys") if args.buys else None
    publisher = Publisher(load_settings().kafka, client_id="yoochoose-replay")
    try:
        summary = replay(
            publisher,
            clicks,
            buys,
            max_events=args.max_events,
            speed=args.speed,
            anomaly_interval=args.anomaly_interval,
            strict=args.strict,
        )
    except MalformedLine as error:
        print(f"error: {error} (--strict)", file=sys.stderr)
        return 2
    finally:
        publisher.close()
    print(json.dumps({**summary.as_dict(), "events_per_s": round(publisher.rate(), 1)}, indent=2))
    if summary.produced == 0:
        why = f"all {summary.lines_read} lines were rejected" if summary.lines_read else "the files have no lines"
        print(f"error: produced nothing: {why} ({clicks}{', ' + str(buys) if buys else ''})", file=sys.stderr)
        return 1
    return 0


def _publish_generated(events, summary, *, client_id: str, what: str, jsonl: str | None) -> int:
    """Send a simulator's events to Kafka, or to a JSON-lines file with --jsonl; print the summary."""
    import orjson

    from ingestion.producers.delivery import publish_all

    if jsonl:
        with open(jsonl, "wb") as out:
            publish_all(events, lambda event: out.write(orjson.dumps(event) + b"\n"), summary, what)
        rate = None
    else:
        from ingestion.publisher import Publisher

        publisher = Publisher(load_settings().kafka, client_id=client_id)
        try:
            publish_all(events, publisher.publish, summary, what)
        finally:
            publisher.close()
        rate = round(publisher.rate(), 1)
    print(json.dumps({**summary.as_dict(), "events_per_s": rate, "written_to": jsonl or "kafka"}, indent=2))
    return 0


def _date(text: str):
    from datetime import date

    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date like 2026-11-01, got {text!r}") from None


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text!r}") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def cmd_produce_simulate(args: argparse.Namespace) -> int:
    from ingestion.producers.delivery import ProduceSummary
    from ingestion.producers.game_sim import SimulationConfig, simulate

    config = SimulationConfig(
        users=args.users,
        days=args.days,
        start=args.start,
        seed=args.seed,
        duplicate_rate=args.duplicate_rate,
        late_rate=args.late_rate,
    )
    summary = ProduceSummary()
    events = simulate(config, summary)
    if args.leaderboard_to_postgres:  # the game server's part: the leaderboard table (oltp/leaderboard.py)
        from oltp.leaderboard import write_through

        events = write_through(events, postgres_dsn(), summary.extra)
    return _publish_generated(events, summary, client_id="game-simulator", what="simulate", jsonl=args.jsonl)


def cmd_produce_orders(args: argparse.Namespace) -> int:
    from ingestion.producers.delivery import ProduceSummary
    from ingestion.producers.orders import OrdersConfig, simulate_orders

    if not args.via_outbox and (args.rate is not None or args.fail_rate or args.rollback_log):
        raise InputError("--rate, --fail-rate and --rollback-log apply to --via-outbox only")
    config = OrdersConfig(
        orders=args.orders,
        users=args.users,
        products=args.products,
        days=args.days,
        start=args.start,
        seed=args.seed,
        delete_rate=args.delete_rate,
        out_of_order_rate=args.out_of_order_rate,
        duplicate_rate=args.duplicate_rate,
    )
    if args.via_outbox:
        return _write_orders_via_outbox(args, config)
    summary = ProduceSummary()
    return _publish_generated(
        simulate_orders(config, summary), summary, client_id="order-relay", what="orders", jsonl=args.jsonl
    )


# ---- the transactional outbox (oltp/): `produce orders --via-outbox` and `relay` ----------------


def _write_orders_via_outbox(args: argparse.Namespace, orders) -> int:
    from oltp.outbox_writer import OutboxWriterConfig, write_orders_via_outbox

    if args.jsonl:
        raise InputError("--jsonl and --via-outbox exclude each other: the outbox path writes to PostgreSQL")
    config = OutboxWriterConfig(
        orders=orders,
        rate=args.rate,
        fail_rate=args.fail_rate,
        rollback_log=Path(args.rollback_log) if args.rollback_log else None,
        connections=args.connections,
    )
    summary = write_orders_via_outbox(postgres_dsn(), config)
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def cmd_relay(args: argparse.Namespace) -> int:
    import signal

    from oltp.relay import RelayConfig, relay_outbox
    from oltp.relay_metrics import RelayMetrics
    from settings import outbox_pending_threshold

    config = RelayConfig(
        batch_rows=args.batch_rows, poll_seconds=args.poll_seconds, pending_threshold=outbox_pending_threshold()
    )
    metrics = RelayMetrics()
    server = _metrics_server(metrics, args)

    def stop_on_signals(relay) -> None:
        # the current batch finishes (published and marked, or rolled back), then the relay exits
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: relay.stop())

    try:
        summary = relay_outbox(
            postgres_dsn(), load_settings().kafka, config, once=args.once, metrics=metrics, on_start=[stop_on_signals]
        )
    finally:
        if server is not None:
            server.close()
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def cmd_produce_yoochoose_sample(args: argparse.Namespace) -> int:
    from ingestion.producers.yoochoose import write_sample

    clicks, buys = write_sample(Path(args.out), sessions=args.sessions, seed=args.seed)
    print(f"wrote {clicks} and {buys}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="eventhouse", description="eventhouse: a dbt-centered event warehouse")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    stack = sub.add_parser("stack", help="the embedded ClickHouse and Kafka").add_subparsers(
        dest="action", required=True
    )
    up = stack.add_parser("up", help="start both services in the background (idempotent)")
    _add_stack_options(up)
    up.set_defaults(func=cmd_stack_up)
    down = stack.add_parser("down", help="stop both services cleanly")
    _add_stack_options(down)
    down.set_defaults(func=cmd_stack_down)
    status = stack.add_parser("status", help="show pids, ports and readiness (exit 3 when not ready)")
    _add_stack_options(status)
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=cmd_stack_status)
    clickhouse = stack.add_parser("clickhouse", help="run the ClickHouse HTTP server in the foreground")
    _add_stack_options(clickhouse)
    clickhouse.add_argument("--database", default=DEFAULT_DATABASE, help="database created at start")
    clickhouse.set_defaults(func=cmd_stack_clickhouse)
    kafka = stack.add_parser("kafka", help="run the Tansu broker in the foreground")
    _add_stack_options(kafka)
    kafka.add_argument("--cluster-id", default="eventhouse")
    kafka.set_defaults(func=cmd_stack_kafka)
    run = stack.add_parser("run", help="run a command against the stack: eventhouse stack run [--ephemeral] -- CMD")
    _add_stack_options(run)
    run.add_argument("--ephemeral", action="store_true", help="a throwaway stack on free ports in a temporary home")
    run.add_argument("command", nargs=argparse.REMAINDER)
    run.set_defaults(func=cmd_stack_run)

    from ingestion.topics import DOMAINS

    load = sub.add_parser("load", help="load events from Kafka into ClickHouse raw tables")
    load.add_argument("--domains", nargs="+", default=list(DOMAINS), choices=DOMAINS)
    load.add_argument("--group-id", default=DEFAULT_LOADER_GROUP_ID)
    load.add_argument(
        "--workers",
        type=_positive_int,
        default=1,
        help="loader processes in the one consumer group, splitting its partitions (the way past one core); "
        "with --metrics-port P, worker i serves on P+i",
    )
    load.add_argument("--raw-database", default=None, help=f"default {DEFAULT_RAW_DATABASE} (EVENTHOUSE_RAW_DATABASE)")
    load.add_argument(
        "--batch-rows", type=_positive_int, default=DEFAULT_BATCH_ROWS, help="flush after this many messages"
    )
    load.add_argument(
        "--batch-bytes", type=_positive_int, default=DEFAULT_BATCH_BYTES, help="flush after this many bytes"
    )
    load.add_argument(
        "--batch-seconds", type=_positive_float, default=DEFAULT_BATCH_SECONDS, help="flush a batch this old"
    )
    load.add_argument("--until-caught-up", action="store_true", help="stop when every partition reached its highwater")
    load.add_argument(
        "--max-seconds",
        type=_positive_float,
        default=None,
        help="stop after this long, connecting and waiting for servers included (exit 1 if they never answered)",
    )
    load.add_argument(
        "--session-timeout-ms",
        type=_positive_int,
        default=None,
        help="consumer group session timeout (default: EVENTHOUSE_KAFKA_SESSION_TIMEOUT_MS, else 6000, which suits "
        "the embedded broker; Kafka's default is 45000)",
    )
    load.add_argument(
        "--create-tables-only", action="store_true", help="create the raw tables (idempotent) and exit, reading nothing"
    )
    load.add_argument(
        "--print-ddl",
        action="store_true",
        help="print the statements that create the raw tables (ON CLUSTER when EVENTHOUSE_CLICKHOUSE_CLUSTER is set) "
        "and exit, connecting to nothing",
    )
    load.add_argument(
        "--ttl-days",
        type=_positive_int,
        default=None,
        help="TTL in days from loaded_at for every raw table (default EVENTHOUSE_RAW_TTL_DAYS[_<TABLE>], 400)",
    )
    load.add_argument("--fetch-max-bytes", type=_positive_int, default=16 << 20, help="Kafka fetch size per request")
    load.add_argument(
        "--partition-fetch-bytes", type=_positive_int, default=4 << 20, help="Kafka fetch size per partition"
    )
    load.add_argument(
        "--retry-max-sleep",
        type=_positive_float,
        default=None,
        help=f"longest wait in seconds between retries while ClickHouse or Kafka is down (default "
        f"{DEFAULT_RETRY_MAX_SLEEP_SECONDS:g}; they start at 0.2 and double)",
    )
    load.add_argument(
        "--metrics-port",
        type=_port_or_zero,
        default=None,
        help="serve Prometheus metrics on http://HOST:PORT/metrics during the run (0: a free port, logged; "
        "off by default)",
    )
    load.add_argument(
        "--metrics-host",
        default=DEFAULT_METRICS_HOST,
        help=f"address the metrics endpoint binds to (default {DEFAULT_METRICS_HOST})",
    )
    load.add_argument(
        "--no-cdc",
        dest="cdc",
        action="store_false",
        help="leave out the CDC topics cdc.<schema>.<table> (loaded into cdc_<table> by default)",
    )
    load.set_defaults(func=cmd_load)

    alerts = sub.add_parser(
        "alerts", help="publish live and pipeline anomalies to the alerts table, Kafka and a webhook, each once"
    )
    alerts.add_argument("--once", action="store_true", help="one pass, then exit printing a JSON summary")
    alerts.add_argument(
        "--interval",
        type=_positive_float,
        default=None,
        help=f"seconds between polls (default {DEFAULT_ALERT_POLL_SECONDS:g}, EVENTHOUSE_ALERT_POLL_SECONDS)",
    )
    alerts.add_argument(
        "--webhook", default=None, help="POST each alert to this URL (Slack-compatible JSON, Idempotency-Key header)"
    )
    alerts.add_argument(
        "--no-pipeline", action="store_true", help="leave out the pipeline checks (live anomalies only)"
    )
    alerts.add_argument(
        "--metrics-port",
        type=_port_or_zero,
        default=None,
        help="serve Prometheus metrics on http://HOST:PORT/metrics while it runs (0: a free port, logged; "
        "off by default)",
    )
    alerts.add_argument(
        "--metrics-host",
        default=DEFAULT_METRICS_HOST,
        help=f"address the metrics endpoint binds to (default {DEFAULT_METRICS_HOST})",
    )
    alerts.set_defaults(func=cmd_alerts)

    produce = sub.add_parser("produce", help="publish events to Kafka").add_subparsers(dest="producer", required=True)
    yoochoose = produce.add_parser("yoochoose", help="replay RecSys 2015 (YOOCHOOSE) click and buy files")
    yoochoose.add_argument("--clicks", default=str(SAMPLES_DIR / "yoochoose-clicks.dat"))
    yoochoose.add_argument("--buys", default=str(SAMPLES_DIR / "yoochoose-buys.dat"))
    yoochoose.add_argument("--max-events", type=_positive_int, default=None)
    yoochoose.add_argument("--speed", type=_non_negative_float, default=0.0, help="event-time s per s; 0 = no waiting")
    yoochoose.add_argument(
        "--anomaly-interval", type=_positive_float, default=None, help="inject a bot burst every S seconds"
    )
    yoochoose.add_argument("--strict", action="store_true", help="a malformed line is fatal instead of skipped")
    yoochoose.set_defaults(func=cmd_produce_yoochoose)
    sample = produce.add_parser("yoochoose-sample", help="write small synthetic files in the YOOCHOOSE layout")
    sample.add_argument("--out", default=str(SAMPLES_DIR))
    sample.add_argument("--sessions", type=_positive_int, default=400)
    sample.add_argument("--seed", type=int, default=2015)
    sample.set_defaults(func=cmd_produce_yoochoose_sample)

    simulate = produce.add_parser("simulate", help="game and economy events from simulated players (5 personas)")
    simulate.add_argument("--users", type=_positive_int, default=52)
    simulate.add_argument("--days", type=_positive_int, default=7)
    simulate.add_argument("--start", type=_date, default="2026-11-01", help="first simulated day (UTC)")
    simulate.add_argument("--seed", type=int, default=7, help="same seed and options, same events (ids included)")
    simulate.add_argument("--duplicate-rate", type=_rate, default=0.0, help="share of events delivered twice")
    simulate.add_argument("--late-rate", type=_rate, default=0.02, help="share of client events arriving late")
    simulate.add_argument("--jsonl", default=None, help="write JSON lines to this file instead of Kafka")
    simulate.add_argument(
        "--leaderboard-to-postgres",
        action="store_true",
        help="also upsert each player's best time-attack time per stage into PostgreSQL's leaderboard (CDC copies it)",
    )
    simulate.set_defaults(func=cmd_produce_simulate)

    orders = produce.add_parser("orders", help="commerce order lifecycles with versions and soft deletes")
    orders.add_argument("--orders", type=_positive_int, default=500)
    orders.add_argument("--users", type=_positive_int, default=120)
    orders.add_argument("--products", type=_positive_int, default=40)
    orders.add_argument("--days", type=_positive_int, default=7)
    orders.add_argument("--start", type=_date, default="2026-11-01", help="first simulated day (UTC)")
    orders.add_argument("--seed", type=int, default=11)
    orders.add_argument("--delete-rate", type=_rate, default=0.03, help="share of orders soft-deleted by an admin")
    orders.add_argument(
        "--out-of-order-rate", type=_rate, default=0.05, help="share of events published after newer versions"
    )
    orders.add_argument("--duplicate-rate", type=_rate, default=0.0, help="share of events delivered twice")
    orders.add_argument("--jsonl", default=None, help="write JSON lines to this file instead of Kafka")
    orders.add_argument(
        "--via-outbox",
        action="store_true",
        help="write each change and its outbox row to PostgreSQL (EVENTHOUSE_POSTGRES_DSN) in one transaction, "
        "in the order the changes happened, instead of publishing to Kafka (`eventhouse relay` publishes "
        "them); --out-of-order-rate and --duplicate-rate reorder or duplicate nothing on this path (ordering "
        "comes from the database); re-running skips the changes already committed",
    )
    orders.add_argument(
        "--rate", type=_positive_float, default=None, help="--via-outbox: changes per second (default: unpaced)"
    )
    orders.add_argument(
        "--fail-rate",
        type=_rate,
        default=0.0,
        help="--via-outbox: share of changes rolled back on purpose after writing their outbox row (tests, demos)",
    )
    orders.add_argument(
        "--rollback-log", default=None, help="--via-outbox: append each change rolled back on purpose (JSON lines)"
    )
    orders.add_argument(
        "--connections",
        type=_positive_int,
        default=DEFAULT_OUTBOX_WRITER_CONNECTIONS,
        help="--via-outbox: concurrent PostgreSQL connections, each writing its share of the orders "
        "(default %(default)s)",
    )
    orders.set_defaults(func=cmd_produce_orders)

    relay = sub.add_parser(
        "relay", help="publish the PostgreSQL outbox to Kafka (acks=all, marked after the ack; until SIGTERM)"
    )
    relay.add_argument("--once", action="store_true", help="drain the outbox, then exit printing a JSON summary")
    relay.add_argument(
        "--batch-rows", type=_positive_int, default=DEFAULT_OUTBOX_BATCH_ROWS, help="rows per batch (transaction)"
    )
    relay.add_argument(
        "--poll-seconds",
        type=_positive_float,
        default=DEFAULT_OUTBOX_POLL_SECONDS,
        help="longest wait between polls; a NOTIFY on channel `outbox` wakes the relay sooner (default %(default)s)",
    )
    relay.add_argument(
        "--metrics-port",
        type=_port_or_zero,
        default=None,
        help="serve Prometheus metrics on http://HOST:PORT/metrics while it runs (0: a free port, logged; "
        "off by default)",
    )
    relay.add_argument(
        "--metrics-host",
        default=DEFAULT_METRICS_HOST,
        help=f"address the metrics endpoint binds to (default {DEFAULT_METRICS_HOST})",
    )
    relay.set_defaults(func=cmd_relay)

    from oltp.cdc_cli import add_cdc_parser

    add_cdc_parser(sub, _positive_int, _positive_float)

    demo = sub.add_parser("demo", help="start the stack and run the main job end to end")
    _add_stack_options(demo)
    demo.set_defaults(func=cmd_demo)

    serve = sub.add_parser("serve", help="the event collector, the KPI API and the dashboards (FastAPI)")
    serve.add_argument(
        "--host", default=None, help="address to bind (default 127.0.0.1; elsewhere needs EVENTHOUSE_API_KEY)"
    )
    serve.add_argument("--port", type=_port, default=None, help="port (default EVENTHOUSE_SERVE_PORT or 8000)")
    serve.set_defaults(func=cmd_serve)

    from archive.commands import add_commands as add_archive_commands

    add_archive_commands(sub)  # archive, replay --from-archive, retention

    ui = sub.add_parser("ui", help="the Dagster UI (dagster dev) on the demo's runs, beside the API and dashboards")
    ui.add_argument("--home", type=_home, default=None, help="EVENTHOUSE_HOME; the instance is HOME/dagster")
    ui.add_argument("--host", default="127.0.0.1", help="address to serve on (default %(default)s)")
    ui.add_argument("--port", type=_port, default=3000, help="Dagster's port (default %(default)s)")
    ui.add_argument("--api-port", type=_port, default=8000, help="port of the API and dashboards (default %(default)s)")
    ui.set_defaults(func=cmd_ui)

    dagster = sub.add_parser(
        "dagster",
        help="Dagster for production: the daemon (schedules, sensor, run queue) and the webserver, "
        "runs and event logs in PostgreSQL",
    )
    dagster.add_argument(
        "--dagster-home",
        type=_home,
        default=None,
        help="DAGSTER_HOME (default $EVENTHOUSE_HOME/dagster-postgres; deploy/dagster.yaml is copied there "
        "when it has no dagster.yaml)",
    )
    dagster.add_argument("--host", default="127.0.0.1", help="address the webserver serves on (default %(default)s)")
    dagster.add_argument("--port", type=_port, default=3000, help="the webserver's port (default %(default)s)")
    dagster.add_argument(
        "--no-prepare",
        dest="prepare",
        action="store_false",
        help="do not parse the dbt project first (target/manifest.json was prepared as a build step)",
    )
    dagster.set_defaults(func=cmd_dagster)
    return parser


def _failure(exc: BaseException) -> str | None:
    """One line naming an operational failure (a server down, bad input, refused credentials), or None for bugs."""
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError
    from kafka.errors import RetriableError

    from alerting.kafka_channel import KafkaChannelError
    from alerting.publisher import PublisherError
    from archive.replay import ReplayError
    from ingestion.loader import LoaderError, short_reason
    from ingestion.producers.yoochoose import MalformedLine
    from ingestion.topics import TopicMismatch
    from oltp.cdc import CdcError
    from oltp.connection import PostgresUnavailable, describe_dsn
    from oltp.relay import RelayError
    from settings import ConfigError
    from stack.processes import ServiceError

    if isinstance(exc, PostgresUnavailable | RelayError | CdcError):
        return str(exc)
    import psycopg

    if isinstance(exc, psycopg.OperationalError):  # the server went away mid-run
        return f"PostgreSQL at {describe_dsn(postgres_dsn())} failed: {str(exc).strip().splitlines()[-1]}"
    if isinstance(
        exc,
        ConfigError
        | ServiceError
        | TopicMismatch
        | LoaderError
        | MalformedLine
        | InputError
        | PublisherError
        | KafkaChannelError
        | ReplayError,
    ):
        return str(exc)
    if isinstance(exc, RetriableError):  # KafkaTimeoutError "Unable to bootstrap from ...", connection errors
        bootstrap = load_settings().kafka.bootstrap
        return f"Kafka at {bootstrap} is not reachable: {short_reason(exc)}"
    ch = load_settings().clickhouse
    if isinstance(exc, OperationalError):
        return f"ClickHouse at {ch.host}:{ch.port} is not reachable: {short_reason(exc)}"
    if isinstance(exc, DatabaseError) and getattr(exc, "code", None) == 516:
        return (
            f"ClickHouse at {ch.host}:{ch.port} refused user {ch.user!r}: wrong password or no such user "
            "(EVENTHOUSE_CLICKHOUSE_USER / EVENTHOUSE_CLICKHOUSE_PASSWORD)"
        )
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror}"
    return None


def main(argv: list[str] | None = None) -> int:
    from settings import ConfigError

    try:
        args = build_parser().parse_args(argv)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not args.verbose:
        # Each failed attempt is logged by us, once, with what happens next; the clients' own
        # warnings about the same attempt (and kafka-python's reconnect chatter) only repeat it.
        for name in ("urllib3.connectionpool", "clickhouse_connect"):
            logging.getLogger(name).setLevel(logging.ERROR)
        logging.getLogger("kafka").setLevel(logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except Exception as exc:
        message = _failure(exc)
        if message is None:
            raise  # a bug: the traceback is what its report needs
        print(f"error: {message}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
