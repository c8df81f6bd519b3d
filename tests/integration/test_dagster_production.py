"""`eventhouse dagster`: Dagster as production runs it, with its runs, event logs and schedule state in PostgreSQL.

One `eventhouse dagster` (dagster-daemon and dagster-webserver on the definitions, deploy/dagster.yaml
as the instance) against the session's embedded PostgreSQL, where it creates the database `dagster`.
Through the webserver's GraphQL API (what the UI asks) the test starts the Kafka lag sensor and
launches a run of one real asset (the `alerts` observation, on the embedded ClickHouse); the daemon
takes the run from the queue and evaluates the sensor. Then it reads Dagster's own tables in
PostgreSQL: the run with its event log, the sensor's tick and state, the daemons' heartbeats; and
no SQLite file in DAGSTER_HOME. SIGTERM stops the command: both processes, their code servers and
run workers exit, and no connection to the database is left.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from orchestration.instance import Webserver
from orchestration.production import libpq_url, live_processes
from orchestration.project import prepare_dbt_project
from settings import REPO_ROOT, dagster_postgres_url
from stack.processes import free_port
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

SELECTOR = {"repositoryLocationName": "orchestration.definitions", "repositoryName": "__repository__"}
INSTANCE_QUERY = "{ instance { info } }"
START_SENSOR = """
mutation($selector: SensorSelector!) {
  startSensor(sensorSelector: $selector) {
    __typename ... on Sensor { sensorState { status } } ... on PythonError { message }
  }
}
"""
LAUNCH_RUN = """
mutation($params: ExecutionParams!) {
  launchRun(executionParams: $params) {
    __typename ... on LaunchRunSuccess { run { runId status } } ... on PythonError { message }
  }
}
"""


def _admin(dsn: str):
    return psycopg.connect(dsn, autocommit=True)


def _drop_database(server_dsn: str, name: str) -> None:
    with _admin(server_dsn) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


def test_eventhouse_dagster_keeps_runs_event_logs_and_sensor_state_in_postgres(embedded_stack, tmp_path):
    prepare_dbt_project()  # a deployment's build step; the command runs with --no-prepare
    env = embedded_stack.env
    env.pop("EVENTHOUSE_DAGSTER_POSTGRES_URL", None)
    # unset, the storage is the database `dagster` on the stack's PostgreSQL, reached with psycopg2
    url = dagster_postgres_url(env)
    assert url.startswith("postgresql+psycopg2://")
    dsn = libpq_url(url)
    stack_parts = conninfo_to_dict(embedded_stack.postgres_dsn)
    assert conninfo_to_dict(dsn) == {**stack_parts, "dbname": "dagster"}
    server_dsn = embedded_stack.postgres_dsn
    _drop_database(server_dsn, "dagster")

    home, port, log_path = tmp_path / "dagster-home", free_port(), tmp_path / "eventhouse-dagster.log"
    command = [sys.executable, "-m", "eventhouse.cli", "dagster", "--dagster-home", str(home), "--port", str(port)]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [*command, "--no-prepare"],  # prepared above
            cwd=REPO_ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a failed test's server.stop() ends the whole group
        )
    server = Webserver(process, port, log_path)
    try:
        server.wait_ready(timeout=90)
        output = server.log()
        assert "created the database for Dagster" in output
        assert (home / "dagster.yaml").read_text() == (REPO_ROOT / "deploy" / "dagster.yaml").read_text()
        summary = json.loads(re.search(r"storage in PostgreSQL at \S+: (\{.*\})", output).group(1))
        assert summary == {
            "run_storage": "PostgresRunStorage",
            "event_log_storage": "PostgresEventLogStorage",
            "schedule_storage": "PostgresScheduleStorage",
            "run_coordinator": "QueuedRunCoordinator",
            "run_launcher": "DefaultRunLauncher",
        }
        # the running webserver's instance (the UI's Deployment > Configuration page) says the same
        info = server.graphql(INSTANCE_QUERY)["instance"]["info"]
        for storage in ("run_storage: PostgresRunStorage", "event_log_storage: PostgresEventLogStorage"):
            assert storage in info
        assert "schedule_storage: PostgresScheduleStorage" in info

        started = server.graphql(START_SENSOR, {"selector": {**SELECTOR, "sensorName": "kafka_lag_sensor"}})
        assert started["startSensor"]["sensorState"]["status"] == "RUNNING", started
        params = {
            "selector": {
                **SELECTOR,
                "jobName": "observe_sources",
                "assetSelection": [{"path": ["eventhouse_raw", "alerts"]}],
            },
            # the step in the run worker's process: the multiprocess default would import the definitions
            # once more for it (seconds); the storage sees the same run and events either way
            "runConfigData": {"execution": {"config": {"in_process": {}}}},
        }
        launched = server.graphql(LAUNCH_RUN, {"params": params})["launchRun"]
        assert launched["__typename"] == "LaunchRunSuccess", launched
        run_id = launched["run"]["runId"]
        assert launched["run"]["status"] == "QUEUED"  # the daemon's queue launches it

        with psycopg.connect(dsn, autocommit=True) as conn:

            def run_status() -> str | None:
                row = conn.execute("SELECT status FROM runs WHERE run_id = %s", (run_id,)).fetchone()
                if row and row[0] in ("FAILURE", "CANCELED"):
                    raise AssertionError(f"run {run_id} ended {row[0]}:\n{server.log()[-6000:]}")
                return row and row[0] == "SUCCESS" and row[0]

            wait_until(run_status, f"run {run_id} to succeed", timeout=90, interval=0.5)
            events = {
                row[0] for row in conn.execute("SELECT dagster_event_type FROM event_logs WHERE run_id = %s", (run_id,))
            }
            assert {
                "PIPELINE_ENQUEUED",
                "PIPELINE_STARTING",
                "PIPELINE_START",
                "ASSET_OBSERVATION",
                "PIPELINE_SUCCESS",
            } <= events
            observed = conn.execute(
                "SELECT asset_key FROM event_logs WHERE run_id = %s AND dagster_event_type = 'ASSET_OBSERVATION'",
                (run_id,),
            ).fetchone()[0]
            assert json.loads(observed) == ["eventhouse_raw", "alerts"]

            # the sensor daemon evaluated the sensor: no lag on the empty topics, so a skipped tick
            def sensor_ticks() -> list:
                return conn.execute("SELECT status FROM job_ticks WHERE type = 'SENSOR'").fetchall()

            assert ("SKIPPED",) in wait_until(sensor_ticks, "a tick of kafka_lag_sensor", timeout=60, interval=0.5)
            state = conn.execute("SELECT status, instigator_body FROM instigators WHERE instigator_type = 'SENSOR'")
            assert [(status, "kafka_lag_sensor" in body) for status, body in state] == [("RUNNING", True)]
            daemons = {row[0] for row in conn.execute("SELECT daemon_type FROM daemon_heartbeats")}
            assert {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= daemons
        assert not list(home.rglob("*.db")), "nothing in SQLite: runs, events and schedules are in PostgreSQL"
    except BaseException:
        server.stop()
        raise

    pids = [int(pid) for pid in re.search(r"dagster-daemon pid (\d+), dagster-webserver pid (\d+)", output).groups()]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0, server.log()[-4000:]
    assert "stopped (SIGTERM)" in server.log()
    for pid in pids:  # each one's process group: the daemon or webserver, its code server, run workers
        assert live_processes(pid) == []
    with _admin(server_dsn) as conn:
        count = "SELECT count(*) FROM pg_stat_activity WHERE datname = 'dagster'"
        wait_until(lambda: conn.execute(count).fetchone()[0] == 0, "Dagster's connections to close", timeout=10)
    _drop_database(server_dsn, "dagster")
