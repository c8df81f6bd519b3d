"""What the embedded ClickHouse server refuses, and that it keeps serving what clients need.

Every refusal is checked for its ClickHouse code and name and followed by a query that must
still work. Most tests share the session server; options it cannot have (a password, short
timeouts, external access) get one server of this module's own.
"""

from __future__ import annotations

import http.client
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from urllib.parse import quote

import clickhouse_connect
import pytest

from stack.lifecycle import clickhouse_ready
from stack.processes import free_port
from stack.sql_guard import ENGINES, TABLE_FUNCTIONS
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

PASSWORD = "lockdown-password"


def _request(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read().decode(errors="replace")
    finally:
        conn.close()


def _post(port: int, sql: str, path: str = "/", headers: dict | None = None):
    return _request(port, "POST", path, sql.encode(), headers)


def _still_serving(port: int, headers: dict | None = None) -> None:
    assert _post(port, "SELECT 40 + 2", headers=headers)[::2] == (200, "42\n")


def _refused(port: int, sql: str, code: int, name: str, *texts: str, path: str = "/", headers: dict | None = None):
    status, response_headers, body = _post(port, sql, path, headers)
    assert response_headers.get("X-ClickHouse-Exception-Code") == str(code), body
    assert body.startswith(f"Code: {code}. DB::Exception:") and f"({name})" in body, body
    for text in texts:
        assert text in body, body
    # The same client (its credentials), minus what a browser added.
    _still_serving(port, {k: v for k, v in (headers or {}).items() if k not in ("Origin", "Host")})
    return status, body


@pytest.fixture()
def port(embedded_stack) -> int:
    return embedded_stack.clickhouse_port


@pytest.fixture()
def db(embedded_stack) -> Iterator[str]:
    name = f"lock_{uuid.uuid4().hex[:8]}"
    admin = embedded_stack.client()
    admin.command(f"CREATE DATABASE {name}")
    yield name
    admin.command(f"DROP DATABASE IF EXISTS {name}")


# ---- classification covers the engine ----------------------------------------------------------


def test_every_table_function_and_engine_of_chdb_is_classified(embedded_stack):
    client = embedded_stack.client()
    functions = {row[0] for row in client.query("SELECT name FROM system.table_functions").result_rows}
    engines = {row[0] for row in client.query("SELECT name FROM system.table_engines").result_rows}
    databases = {row[0] for row in client.query("SELECT name FROM system.database_engines").result_rows}
    # A chDB upgrade that adds one fails here instead of being refused as unknown (or worse).
    assert functions - TABLE_FUNCTIONS.keys() == set()
    assert (engines | databases) - ENGINES.keys() == set()


# ---- files ----------------------------------------------------------------------------------------


def test_files_are_read_and_written_under_user_files_only(embedded_stack, port):
    user_files = embedded_stack.home / "user_files"
    name = f"lock_{uuid.uuid4().hex[:8]}"
    (user_files / f"{name}.txt").write_text("inside\n")
    assert _post(port, f"SELECT * FROM file('{name}.txt', LineAsString)")[::2] == (200, "inside\n")
    assert _post(port, f"SELECT * FROM file('{user_files}/{name}.txt', LineAsString)")[::2] == (200, "inside\n")
    assert _post(port, f"INSERT INTO FUNCTION file('{name}.csv', CSV, 'a UInt8') SELECT 7")[0] == 200
    assert (user_files / f"{name}.csv").read_text() == "7\n"

    _refused(
        port,
        "SELECT * FROM file('/etc/passwd', LineAsString)",
        497,
        "ACCESS_DENIED",
        f"file('/etc/passwd'): path is outside user_files_path {user_files}",
    )
    _refused(port, "SELECT file('/etc/hostname')", 497, "ACCESS_DENIED", "outside user_files_path")
    _refused(port, f"SELECT * FROM file('../clickhouse/{name}', LineAsString)", 497, "ACCESS_DENIED", "'..'")
    _refused(
        port,
        "INSERT INTO FUNCTION file('/tmp/eventhouse-lockdown.csv', CSV, 'a UInt8') SELECT 1",
        497,
        "ACCESS_DENIED",
        "outside user_files_path",
    )
    _refused(
        port,
        "SELECT * FROM file(concat('/etc/', 'passwd'), LineAsString)",
        497,
        "ACCESS_DENIED",
        "must be a string literal",
    )
    _refused(port, "SELECT * FROM filesystem('/etc')", 497, "ACCESS_DENIED", "outside user_files_path")
    _refused(
        port,
        "CREATE TABLE default.lock_file (a String) ENGINE = File(TSV, '/etc/passwd')",
        497,
        "ACCESS_DENIED",
        "File('/etc/passwd')",
    )
    _refused(port, "CREATE DATABASE lock_fs ENGINE = Filesystem('/')", 497, "ACCESS_DENIED", "never allowed")
    assert not Path("/tmp/eventhouse-lockdown.csv").exists()


@pytest.mark.parametrize(
    ("sql", "path", "text"),
    [
        ("SELECT * APPLY(file) FROM (SELECT '/etc/hostname' AS p)", "/", "APPLY with file"),
        ("SELECT * APPLY(x -> file(x)) FROM (SELECT '/etc/hostname' AS p)", "/", "APPLY with file"),
        ("SHOW COLUMNS FROM system.one WHERE file('/etc/hostname') != ''", "/", "file(...) appears where"),
        ("SELECT * FROM file({p:String}, LineAsString)", "/?param_p=%2Fetc%2Fpasswd", "file('/etc/passwd')"),
        ("SELECT * FROM file('stdin', LineAsString)", "/", "standard stream"),
    ],
)
def test_file_calls_hidden_from_the_parse_tree_are_found(port, sql, path, text):
    _refused(port, sql, 497, "ACCESS_DENIED", text, path=path)


def test_a_path_bound_by_the_session_is_checked_on_every_use(embedded_stack, port):
    """`SET param_p` binds a placeholder for later statements of the session; no cached verdict applies."""
    name = f"lock_{uuid.uuid4().hex[:8]}.txt"
    (embedded_stack.home / "user_files" / name).write_text("mine\n")
    session = f"/?session_id=lock-{uuid.uuid4().hex[:8]}"
    sql = "SELECT * FROM file({p:String}, LineAsString)"
    assert _post(port, f"SET param_p = '{name}'", session)[0] == 200
    assert _post(port, sql, session)[::2] == (200, "mine\n")
    assert _post(port, "SET param_p = '/etc/passwd'", session)[0] == 200
    _refused(port, sql, 497, "ACCESS_DENIED", "file('/etc/passwd')", path=session)


def test_table_names_are_not_paths_and_nothing_is_written_into_outfiles(port, tmp_path):
    # chDB's `default` database reads files named as tables; the server's does not.
    status, headers, body = _post(port, "SELECT * FROM `/etc/hostname`")
    assert headers["X-ClickHouse-Exception-Code"] == "60" and "(UNKNOWN_TABLE)" in body
    status, headers, body = _post(port, "SELECT * FROM '/etc/hostname'")
    assert headers["X-ClickHouse-Exception-Code"] == "60"
    target = tmp_path / "out.txt"
    _refused(port, f"SELECT 1 INTO OUTFILE '{target}'", 497, "ACCESS_DENIED", "INTO OUTFILE")
    _refused(
        port, "INSERT INTO default.t FROM INFILE '/etc/passwd' FORMAT LineAsString", 497, "ACCESS_DENIED", "FROM INFILE"
    )
    assert not target.exists()


# ---- network, programs, the server process ----------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("SELECT * FROM url('http://127.0.0.1:1/x.csv', CSV, 'a String')", "url(...): table function url"),
        ("SELECT * FROM s3('http://127.0.0.1:1/b/x.csv', CSV, 'a String')", "table function s3"),
        ("SELECT * FROM remote('127.0.0.1:1', system.one)", "table function remote"),
        ("SELECT * FROM mysql('127.0.0.1:1', 'd', 't', 'u', 'p')", "table function mysql"),
        ("SELECT * FROM numbers(1) WHERE 1 IN (SELECT * FROM url('http://127.0.0.1:1/', CSV, 'a UInt8'))", "url"),
        (
            "CREATE TABLE default.lock_k (a String) ENGINE = Kafka SETTINGS kafka_broker_list = '127.0.0.1:1', "
            "kafka_topic_list = 't', kafka_group_name = 'g', kafka_format = 'TSV'",
            "ENGINE = Kafka",
        ),
        ("CREATE TABLE default.lock_u (a String) ENGINE = URL('http://127.0.0.1:1/', CSV)", "ENGINE = URL"),
        (
            "CREATE DICTIONARY default.lock_d (a UInt64) PRIMARY KEY a SOURCE(HTTP(url 'http://127.0.0.1:1/' "
            "format 'TSV')) LAYOUT(FLAT()) LIFETIME(0)",
            "SOURCE(HTTP(...))",
        ),
        ("CREATE DATABASE lock_pg ENGINE = PostgreSQL('127.0.0.1:1', 'd', 'u', 'p')", "ENGINE = PostgreSQL"),
    ],
)
def test_the_network_needs_external_access(port, sql, text):
    _refused(port, sql, 497, "ACCESS_DENIED", text, "--allow-external-access")


@pytest.mark.parametrize(
    ("sql", "text"),
    [
        ("SELECT * FROM executable('date', TSV, 'a String')", "runs a program on the server"),
        ("CREATE TABLE default.lock_e (a String) ENGINE = Executable('date', TSV)", "runs a program"),
        ("SELECT * FROM python(x)", "Python objects of the server process"),
        ("SELECT * FROM eval('SELECT 1')", "runs SQL built from a string"),
        ("BACKUP TABLE default.t TO Disk('default', 'b.zip')", "BACKUP writes backups"),
        ("RESTORE TABLE default.t FROM Disk('default', 'b.zip')", "RESTORE reads backups"),
        ("ATTACH TABLE default.lock_a FROM '/var/lib' (a Int32) ENGINE = MergeTree ORDER BY a", "ATTACH ... FROM"),
        ("SYSTEM SHUTDOWN", "SYSTEM SHUTDOWN is not allowed"),
        ("SYSTEM KILL", "SYSTEM KILL is not allowed"),
        ("CREATE USER lock_u", "access management"),
    ],
)
def test_programs_backups_and_the_process_are_never_reachable(port, sql, text):
    _refused(port, sql, 497, "ACCESS_DENIED", text)


def test_multi_statements_are_refused_and_the_second_never_runs(embedded_stack, port, db):
    client = embedded_stack.client()
    client.command(f"CREATE TABLE {db}.victim (a UInt8) ENGINE = MergeTree ORDER BY a")
    _refused(port, "SELECT 1; SELECT 2", 62, "SYNTAX_ERROR", "Multi-statements are not allowed")
    _refused(port, f"EXPLAIN AST SELECT 1; DROP TABLE {db}.victim", 62, "SYNTAX_ERROR")
    _refused(port, f"SELECT 'a;' ; DROP TABLE {db}.victim -- ;", 62, "SYNTAX_ERROR")
    # Statements after VALUES data are data for the Values parser, never SQL.
    assert _post(port, f"INSERT INTO {db}.victim VALUES (1); DROP TABLE {db}.victim")[0] == 200
    assert client.command(f"EXISTS TABLE {db}.victim") == 1
    assert _post(port, "SELECT 'a;b';\n")[::2] == (200, "a;b\n")


def test_insert_data_never_evaluates_expressions(embedded_stack, port, db):
    client = embedded_stack.client()
    client.command(f"CREATE TABLE {db}.t (a UInt8, s String) ENGINE = MergeTree ORDER BY a")
    for sql in (
        f"INSERT INTO {db}.t VALUES (1, file('/etc/hostname'))",
        f"INSERT INTO {db}.t FORMAT Values (2, file('/etc/hostname'))",
    ):
        status, headers, body = _post(port, sql)
        assert headers["X-ClickHouse-Exception-Code"] == "344" and "Interpreting expressions is disabled" in body
    client.command(f"INSERT INTO {db}.t VALUES (3, 'literal'), (4, 'it''s')")
    assert client.query(f"SELECT a, s FROM {db}.t ORDER BY a").result_rows == [(3, "literal"), (4, "it's")]


def test_settings_that_name_files_or_carry_sql_are_refused(port):
    _refused(
        port,
        "SELECT 1",
        497,
        "ACCESS_DENIED",
        "setting format_template_row: names a file",
        path="/?format_template_row=%2Fetc%2Fpasswd",
    )
    _refused(
        port,
        "SELECT 1 SETTINGS additional_table_filters = {'t': 'a > 1'}",
        497,
        "ACCESS_DENIED",
        "setting additional_table_filters: runs SQL given as a string",
    )
    _refused(
        port,
        "CREATE TABLE default.lock_disk (a Int32) ENGINE = MergeTree ORDER BY a "
        "SETTINGS disk = disk(type = local, path = '/tmp/lock_disk/')",
        497,
        "ACCESS_DENIED",
        "disk(...)",
    )
    _refused(port, "SELECT 1", 497, "ACCESS_DENIED", "dialect", path="/?dialect=prql")


# ---- HTTP -----------------------------------------------------------------------------------------


def test_get_is_read_only(port):
    status, body = _refused_get(port, "CREATE TABLE default.lock_get (a Int32) ENGINE = Memory")
    assert status == 403 and "(READONLY)" in body and "method GET implies readonly" in body
    assert _request(port, "GET", "/?query=" + quote("SELECT 6 * 7"))[::2] == (200, "42\n")
    assert _request(port, "GET", "/?query=" + quote("SHOW DATABASES"))[0] == 200
    assert _request(port, "GET", "/?query=" + quote("EXISTS TABLE default.lock_get"))[::2] == (200, "0\n")


def _refused_get(port: int, sql: str) -> tuple[int, str]:
    status, headers, body = _request(port, "GET", "/?query=" + quote(sql))
    assert headers["X-ClickHouse-Exception-Code"] == "164", body
    _still_serving(port)
    return status, body


def test_browser_requests_and_foreign_hosts_are_refused(port):
    status, body = _refused(
        port, "SELECT 1", 497, "ACCESS_DENIED", "Origin header", headers={"Origin": "http://example.com"}
    )
    assert status == 403
    status, headers, body = _post(port, "SELECT 1", headers={"Host": "rebound.example:8123"})
    assert status == 403 and "(ACCESS_DENIED)" in body and "not a loopback name" in body
    assert _post(port, "SELECT 1", headers={"Host": f"localhost:{port}"})[::2] == (200, "1\n")


def test_what_dbt_and_the_loader_send_still_runs(embedded_stack, db):
    client = embedded_stack.client(database=db)
    client.command("CREATE TABLE a (d Date, v UInt32) ENGINE = MergeTree PARTITION BY d ORDER BY v")
    client.command("CREATE TABLE b AS a")
    client.insert("a", [(date(2024, 1, 1), 1), (date(2024, 1, 2), 2)], column_names=["d", "v"])
    client.command("ALTER TABLE b REPLACE PARTITION '2024-01-01' FROM a SETTINGS mutations_sync = 1")
    client.command("EXCHANGE TABLES a AND b")
    assert client.command("SELECT count() FROM a") == 1
    client.command("SYSTEM FLUSH LOGS")
    client.command("OPTIMIZE TABLE b FINAL")
    client.command(
        f"CREATE DICTIONARY dict (v UInt64, d Date) PRIMARY KEY v SOURCE(CLICKHOUSE(db '{db}' table 'b')) "
        "LAYOUT(HASHED()) LIFETIME(0)"
    )
    assert str(client.command(f"SELECT dictGet('{db}.dict', 'd', toUInt64(2))")) == "2024-01-02"
    assert client.command("SELECT count() FROM {t:Identifier}", parameters={"t": "b"}) == 2


# ---- a server of this module's own: password, short timeouts, external access ------------------

_SERVE = """
import json, logging, sys
from pathlib import Path
from stack.clickhouse_server import ServerOptions, serve
logging.basicConfig(level=logging.INFO)
options = json.loads(sys.argv[1])
serve(ServerOptions(data_dir=Path(options.pop("data_dir")), **options))
"""


@pytest.fixture(scope="module")
def own_server(tmp_path_factory) -> Iterator[int]:
    home = tmp_path_factory.mktemp("lockdown")
    port = free_port()
    options = {
        "data_dir": str(home / "clickhouse"),
        "port": port,
        "password": PASSWORD,
        "allow_external_access": True,
        "keep_alive_timeout": 1.0,
        "receive_timeout": 1.0,
        "send_timeout": 5.0,
        "auth_free_failures": 2,
        "auth_base_delay": 0.3,
        "auth_max_delay": 0.6,
    }
    process = subprocess.Popen(
        [sys.executable, "-c", _SERVE, json.dumps(options)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:

        def ready() -> bool:
            assert process.poll() is None, process.stdout.read()
            return clickhouse_ready(port)

        wait_until(ready, "the server to become ready", interval=0.1)
        yield port
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)


def _auth(password: str) -> dict:
    return {"X-ClickHouse-User": "default", "X-ClickHouse-Key": password}


def test_external_access_flag_allows_the_network(own_server):
    inner = f"http://127.0.0.1:{own_server}/?user=default&password={PASSWORD}&query=SELECT+7"
    status, _, body = _post(own_server, f"SELECT * FROM url('{inner}', TSV, 'x UInt8')", headers=_auth(PASSWORD))
    assert (status, body) == (200, "7\n")
    # Programs stay refused.
    _refused(
        own_server,
        "SELECT * FROM executable('date', TSV, 'a String')",
        497,
        "ACCESS_DENIED",
        "never allowed",
        headers=_auth(PASSWORD),
    )


def test_wrong_passwords_slow_down_queue_and_never_delay_the_right_one(own_server):
    def attempt(password: str) -> tuple[int, float]:
        started = time.monotonic()
        status, headers, _ = _post(own_server, "SELECT 1", headers=_auth(password))
        if status != 200:
            assert headers["X-ClickHouse-Exception-Code"] == "516"
        return status, time.monotonic() - started

    assert attempt(PASSWORD)[0] == 200
    durations = [attempt("wrong")[1] for _ in range(4)]  # two free, then 0.3 s and 0.6 s
    assert durations[3] >= 0.5

    finished: list[float] = []

    def wrong() -> None:
        attempt("wrong")
        finished.append(time.monotonic())

    started = time.monotonic()
    threads = [threading.Thread(target=wrong) for _ in range(3)]
    for thread in threads:
        thread.start()
    status, _ = attempt(PASSWORD)
    right_done = time.monotonic()
    for thread in threads:
        thread.join(timeout=30)
    assert status == 200
    # Three capped 0.6 s waits one after another, not side by side.
    assert max(finished) - started >= 1.5
    assert right_done < max(finished)


def _read_until_closed(sock: socket.socket, limit: float = 15.0) -> bytes:
    data = b""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk
    raise AssertionError(f"the server kept the connection open for {limit} s")


def test_half_sent_requests_and_idle_connections_time_out(own_server):
    for partial in (
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\n",  # headers never end
        b"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ClickHouse-Key: " + PASSWORD.encode() + b"\r\n"
        b"Content-Length: 100\r\n\r\nSELECT",  # body never ends
    ):
        with socket.create_connection(("127.0.0.1", own_server), timeout=20) as sock:
            started = time.monotonic()
            sock.sendall(partial)
            reply = _read_until_closed(sock)
            assert time.monotonic() - started >= 0.9
            assert reply == b"" or b"SOCKET_TIMEOUT" in reply
    with socket.create_connection(("127.0.0.1", own_server), timeout=20) as sock:
        request = (
            f"POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-ClickHouse-Key: {PASSWORD}\r\nContent-Length: 8\r\n\r\nSELECT 1"
        )
        sock.sendall(request.encode())
        reply = _read_until_closed(sock)  # the answer, then the idle keep-alive connection is closed
    assert reply.startswith(b"HTTP/1.1 200") and b"Keep-Alive: timeout=1" in reply
    assert reply.endswith(b"\r\n1\n\r\n0\r\n\r\n")  # the streamed result, whole


def test_clickhouse_connect_reconnects_after_the_server_closed_an_idle_connection(own_server):
    client = clickhouse_connect.get_client(host="127.0.0.1", port=own_server, password=PASSWORD)
    assert client.command("SELECT 1") == 1
    # urllib3's pool container refuses iteration; keys() is its way to list them.
    pools = [client.http.pools[key] for key in client.http.pools.keys()]  # noqa: SIM118
    sockets = [c.sock for p in pools if p.port == own_server for c in p.pool.queue if c is not None and c.sock]
    assert sockets, "clickhouse-connect kept no connection to reuse"
    deadline = time.monotonic() + 15
    # A socket the server closed is readable (EOF): wait for that, not for a fixed time.
    while sockets and not select.select(sockets, [], [], 0.1)[0]:
        assert time.monotonic() < deadline, "the server never closed the idle connection"
    assert client.command("SELECT 2") == 2


# ---- start-up -------------------------------------------------------------------------------------


def test_listening_beyond_loopback_needs_a_password(tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "EVENTHOUSE_CLICKHOUSE_PASSWORD"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "eventhouse.cli",
            "stack",
            "clickhouse",
            "--home",
            str(tmp_path),
            "--clickhouse-port",
            str(free_port()),
            "--listen-host",
            "0.0.0.0",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "without a password" in lines[0] and "EVENTHOUSE_CLICKHOUSE_PASSWORD" in lines[0]
