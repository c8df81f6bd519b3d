"""`eventhouse stack ...` and the servers' start-up, refusal and shutdown behaviour."""

from __future__ import annotations

import json
import os
import pwd
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import clickhouse_connect
import psycopg
import pytest

from stack.processes import free_port, pid_alive
from tests.conftest import ServerProcess

pytestmark = pytest.mark.integration


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "eventhouse.cli", *args], capture_output=True, text=True, timeout=180, env=env
    )


def _ports(home) -> list[str]:
    return [
        "--home",
        str(home),
        "--clickhouse-port",
        str(free_port()),
        "--kafka-port",
        str(free_port()),
        "--postgres-port",
        str(free_port()),
    ]


def _process_uid(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Uid:"):
            return int(line.split()[1])
    raise AssertionError(f"no Uid line for {pid}")


def test_up_status_down(tmp_path):
    ports = _ports(tmp_path)
    up = _cli("stack", "up", *ports)
    try:
        assert up.returncode == 0, up.stderr
        assert "ClickHouse  http://127.0.0.1:" in up.stdout
        status = _cli("stack", "status", "--json", *ports)
        assert status.returncode == 0, status.stdout + status.stderr
        info = json.loads(status.stdout)
        assert {info[key]["state"] for key in ("clickhouse", "kafka", "postgres")} == {"ready"}
        # PostgreSQL: on 127.0.0.1 only, ready for logical decoding, never running as root
        pg_port = int(ports[ports.index("--postgres-port") + 1])
        assert info["postgres"]["port"] == pg_port
        assert f"postgresql://eventhouse@127.0.0.1:{pg_port}/eventhouse" in up.stdout
        with psycopg.connect(f"postgresql://eventhouse@127.0.0.1:{pg_port}/eventhouse") as conn:
            settings = dict(conn.execute("SELECT name, setting FROM pg_settings").fetchall())
        assert settings["wal_level"] == "logical"
        assert settings["listen_addresses"] == "127.0.0.1" and settings["unix_socket_directories"] == ""
        if os.geteuid() == 0:
            assert _process_uid(info["postgres"]["pid"]) == pwd.getpwnam("postgres").pw_uid
            assert "PostgreSQL will run as the unprivileged user 'postgres'" in up.stdout + up.stderr
        assert (tmp_path / "run" / "clickhouse.pid").exists()
        assert (tmp_path / "clickhouse" / "eventhouse-server.lock").exists()
        again = _cli("stack", "up", *ports)  # idempotent
        assert again.returncode == 0, again.stderr
        again_info = json.loads(_cli("stack", "status", "--json", *ports).stdout)
        assert [again_info[k]["pid"] for k in ("clickhouse", "postgres")] == [
            info[k]["pid"] for k in ("clickhouse", "postgres")
        ]
    finally:
        down = _cli("stack", "down", *ports)
    assert down.returncode == 0 and "Stopped" in down.stdout and "PostgreSQL" in down.stdout
    assert not pid_alive(info["postgres"]["pid"])
    stopped = _cli("stack", "status", *ports)
    assert stopped.returncode == 3 and "stopped" in stopped.stdout


def test_busy_port_gives_a_clear_error(tmp_path):
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        busy = blocker.getsockname()[1]
        ports = _ports(tmp_path)
        ports[ports.index("--clickhouse-port") + 1] = str(busy)
        result = _cli("stack", "up", *ports)
        assert result.returncode == 1
        assert f"port {busy} on 127.0.0.1 is already in use" in result.stderr
        foreground = _cli("stack", "clickhouse", "--home", str(tmp_path / "fg"), "--clickhouse-port", str(busy))
        assert foreground.returncode == 2
        assert f"127.0.0.1:{busy}: the port is already in use" in foreground.stderr
        # The data directory lock was released on the way out.
        assert "in use by process" not in foreground.stderr


def test_second_process_on_a_data_directory_names_it_and_its_owner(tmp_path):
    first = ServerProcess(tmp_path, free_port())
    try:
        first.wait_ready()
        second = _cli("stack", "clickhouse", "--home", str(tmp_path), "--clickhouse-port", str(free_port()))
        assert second.returncode == 2
        assert str((tmp_path / "clickhouse").resolve()) in second.stderr
        assert f"in use by process {first.process.pid}" in second.stderr
    finally:
        first.process.send_signal(signal.SIGTERM)
        first.process.wait(timeout=60)


def test_sigterm_shuts_down_cleanly_and_keeps_every_acknowledged_insert(tmp_path):
    port = free_port()
    server = ServerProcess(tmp_path, port)
    server.wait_ready()
    client = clickhouse_connect.get_client(host="127.0.0.1", port=port)
    client.command("CREATE TABLE default.kept (batch UInt32, n UInt32) ENGINE = MergeTree ORDER BY (batch, n)")
    acknowledged = []
    third_batch_done = threading.Event()

    def insert_batches() -> None:
        writer = clickhouse_connect.get_client(host="127.0.0.1", port=port, query_retries=0)
        for batch in range(200):
            try:
                writer.insert("default.kept", [(batch, i) for i in range(20_000)], column_names=["batch", "n"])
            except Exception:
                return
            acknowledged.append(batch)
            if batch == 2:
                third_batch_done.set()

    thread = threading.Thread(target=insert_batches)
    thread.start()
    assert third_batch_done.wait(60)
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(timeout=60) == 0
    thread.join(timeout=60)
    output = server.output()
    assert "ClickHouse HTTP server stopped" in output

    restarted = ServerProcess(tmp_path, port)
    try:
        restarted.wait_ready()
        client = clickhouse_connect.get_client(host="127.0.0.1", port=port)
        batches = client.query("SELECT batch, count() FROM default.kept GROUP BY batch ORDER BY batch").result_rows
        # Every acknowledged batch is there whole (an insert is all or nothing); besides them at
        # most the one batch in flight at the SIGTERM, whose answer never came back.
        assert [b for b, _ in batches if b in acknowledged] == acknowledged
        assert all(count == 20_000 for _, count in batches)
        assert {b for b, _ in batches} - set(acknowledged) <= {len(acknowledged)}
    finally:
        restarted.process.send_signal(signal.SIGTERM)
        restarted.process.wait(timeout=60)
