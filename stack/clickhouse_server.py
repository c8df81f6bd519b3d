"""A ClickHouse-HTTP-compatible server in front of an embedded chDB engine.

dbt-clickhouse, clickhouse-connect and anything else that speaks ClickHouse's HTTP
interface talks to this server exactly as it would to a real ClickHouse. It owns the
chDB data directory (one process may open it) and serves:

- `GET /ping` and `GET /`, queries in `query=` and/or the POST body, multipart forms;
- `database`, `session_id`/`session_timeout`/`session_check`, `query_id`,
  `default_format`, `param_*` query parameters, and any other URL parameter as a
  setting for that request;
- inserts whose data streams from the body (statement in `query=` or in the body's
  first line), chunked transfer encoding, lz4/zstd/gzip/deflate request bodies;
- results streamed block by block with chunked transfer encoding;
- ClickHouse's response headers and error bodies, so clients raise the right errors.

It is locked down for a server anyone on the machine (or a web page) could reach: every
statement passes `stack.sql_guard` first (GET is read-only, files only under user_files_path,
no network without --allow-external-access, no programs, no multi-statements); requests with
an Origin header or a non-loopback Host are refused; the empty default password works on
loopback only; wrong passwords are throttled; idle and half-sent requests time out.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import logging
import os
import re
import secrets
import signal
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from settings import DEFAULT_CLICKHOUSE_PORT
from stack.chdb_engine import ChdbEngine, Session
from stack.clickhouse_protocol import (
    STREAMABLE_FORMATS,
    TRANSPORT_PARAMS,
    ClickHouseError,
    InsertHead,
    decompress_chunks,
    leading_keyword,
    native_header_block,
    parse_describe,
    parse_multipart,
    returns_result_set,
    settings_statement,
    split_insert,
    split_values_insert,
    streamable_statement,
    strip_trailing_format,
    trailing_format,
)
from stack.network_guard import AuthThrottle, host_header_is_loopback, is_loopback_bind, is_loopback_peer
from stack.sql_guard import GuardPolicy, StatementGuard, access_denied, quote_string, shift_error_positions

log = logging.getLogger(__name__)

READ_CHUNK = 1 << 20
INSERT_HEAD_PROBE = 64 << 10  # bytes read before deciding whether a body is INSERT ... FORMAT + data
MAX_STATEMENT_BYTES = 64 << 20
_SETTINGS_CLAUSE = re.compile(r"\bSETTINGS\b", re.IGNORECASE)
SERVER_NAME = "eventhouse-embedded"


# Inserts never evaluate expressions in their data: `VALUES (file('/etc/passwd'))` would read
# the file in the engine, where no statement check sees it. Literals still parse.
_LITERAL_VALUES_ONLY = {
    "input_format_values_interpret_expressions": "0",
    "input_format_values_deduce_templates_of_expressions": "0",
}
_EXPLAIN_PREFIX = "EXPLAIN AST "


class PortInUse(RuntimeError):
    """The HTTP port is taken by another process."""


class InsecureBinding(RuntimeError):
    """A non-loopback address was asked for without a password."""


@dataclass
class ServerOptions:
    data_dir: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_CLICKHOUSE_PORT
    user: str = "default"
    password: str = ""
    default_database: str = "default"
    ensure_databases: tuple[str, ...] = ()
    # The embedded server runs in UTC whatever the machine's zone, so DateTime values
    # mean the same on every laptop and in CI.
    timezone: str = "UTC"
    # file(), File engines and the like read and write here only (default: beside the data directory).
    user_files_path: Path | None = None
    # url(), s3(), remote(), Kafka/URL engines, network dictionary sources ...
    allow_external_access: bool = False
    # ClickHouse's defaults (keep_alive_timeout, http_receive_timeout, http_send_timeout), in seconds.
    keep_alive_timeout: float = 30.0
    receive_timeout: float = 30.0
    send_timeout: float = 30.0
    # Wrong passwords: free attempts, then base_delay doubling up to max_delay (per client address).
    auth_free_failures: int = 3
    auth_base_delay: float = 0.25
    auth_max_delay: float = 5.0

    @property
    def user_files(self) -> Path:
        return (self.user_files_path or self.data_dir.parent / "user_files").resolve()

    def validate(self) -> None:
        """Refuse to listen beyond loopback with the empty default password (ClickHouse's default user rule)."""
        if not self.password and not is_loopback_bind(self.host):
            raise InsecureBinding(
                f"refusing to listen on {self.host or '*'}:{self.port} without a password: the empty default "
                "password is accepted on loopback only; set EVENTHOUSE_CLICKHOUSE_PASSWORD or listen on 127.0.0.1"
            )


@dataclass
class RequestStats:
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    result_rows: int = 0
    result_bytes: int = 0
    elapsed_ns: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def header(self) -> str:
        return json.dumps(
            {
                "read_rows": str(self.read_rows),
                "read_bytes": str(self.read_bytes),
                "written_rows": str(self.written_rows),
                "written_bytes": str(self.written_bytes),
                "total_rows_to_read": str(self.read_rows),
                "result_rows": str(self.result_rows),
                "result_bytes": str(self.result_bytes),
                "elapsed_ns": str(self.elapsed_ns),
            }
        )


def _engine_error(exc: BaseException) -> ClickHouseError:
    if isinstance(exc, ClickHouseError):
        return exc
    return ClickHouseError.from_engine(str(exc))


def _result_stats(result: Any, stats: RequestStats) -> None:
    try:
        stats.read_rows = int(result.rows_read())
        stats.read_bytes = int(result.bytes_read())
        stats.elapsed_ns = int(result.elapsed() * 1e9)
    except Exception:  # statistics are informative only
        pass


def _with_insert_settings(head: InsertHead, settings: dict[str, str]) -> tuple[InsertHead, dict[str, str]]:
    """The INSERT head with its SETTINGS clause extended; returns the settings left for the handle.

    An insert's URL settings (a dedup token differs on every insert) go into its own SETTINGS
    clause: applying and restoring them on the handle costs three extra queries per insert,
    more than a small insert itself. The clause always makes Values data literal-only, last so
    it wins. It starts on a new line so a trailing `-- comment` in the head cannot swallow it.
    """
    has_clause = _SETTINGS_CLAUSE.search(head.statement) is not None
    extra = {} if has_clause else dict(settings)
    extra.update(_LITERAL_VALUES_ONLY)
    clause = settings_statement(extra)[len("SET ") :]
    joiner = "\n, " if has_clause else "\nSETTINGS "
    return dataclasses.replace(head, statement=f"{head.statement}{joiner}{clause}"), (settings if has_clause else {})


class HandleGuardEngine:
    """The guard's three helper queries, on the request's own handle (its settings, its parser)."""

    def __init__(self, handle: Any):
        self.handle = handle

    def explain_ast(self, sql: str, params: Mapping[str, str]) -> str:
        try:
            return self.handle.query(_EXPLAIN_PREFIX + sql, "TSVRaw", params=dict(params)).bytes().decode()
        except Exception as exc:
            # The statement itself is wrong (syntax, unknown parameter): say so at its own positions.
            raise ClickHouseError.from_engine(shift_error_positions(str(exc), len(_EXPLAIN_PREFIX))) from exc

    def normalize(self, sql: str) -> str:
        return self._scalar("normalizeQueryKeepNames", sql)

    def format_single_line(self, sql: str) -> str:
        return self._scalar("formatQuerySingleLine", sql)

    def _scalar(self, function: str, sql: str) -> str:
        try:
            return self.handle.query(f"SELECT {function}({quote_string(sql)})", "TSVRaw").bytes().decode()
        except Exception as exc:
            raise _engine_error(exc) from exc


class _SessionState:
    """What a session handle holds beyond the client's own statements.

    ClickHouse applies URL settings and `database` to one query only. Clients resend the
    same ones on every request, so undoing them after each request would cost extra
    statements every time; instead a setting is restored when a request arrives without
    it (or with another value), and `USE` runs only when the database changes.
    """

    def __init__(self) -> None:
        self.applied: dict[str, str] = {}
        self.originals: dict[str, tuple[str, bool]] = {}
        self.database: str | None = None


class ClickHouseHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, options: ServerOptions, engine: ChdbEngine, relative_paths: bool = True):
        self.options = options
        self.engine = engine
        self.timezone = options.timezone
        self.in_flight = 0
        self.in_flight_lock = threading.Condition()
        # Set by drain(): from then on no request reaches the engine, which is about to close.
        self.closing = False
        self.loopback_only = is_loopback_bind(options.host)
        self.guard = StatementGuard(
            GuardPolicy(options.user_files, relative_paths, options.allow_external_access),
        )
        self.auth_throttle = AuthThrottle(options.auth_free_failures, options.auth_base_delay, options.auth_max_delay)
        if ":" in options.host:
            self.address_family = socket.AF_INET6
        try:
            super().__init__((options.host, options.port), ClickHouseRequestHandler)
        except OSError as exc:
            if exc.errno in (98, 48):  # EADDRINUSE on Linux / macOS
                raise PortInUse(
                    f"Cannot serve ClickHouse HTTP on {options.host}:{options.port}: the port is already in use. "
                    "Stop whatever listens there or choose another port (--clickhouse-port / "
                    "EVENTHOUSE_CLICKHOUSE_PORT)."
                ) from None
            raise

    def request_started(self) -> bool:
        """Count a request in; False once shutdown began (the engine must not be touched)."""
        with self.in_flight_lock:
            if self.closing:
                return False
            self.in_flight += 1
            return True

    def request_finished(self) -> None:
        with self.in_flight_lock:
            self.in_flight -= 1
            self.in_flight_lock.notify_all()

    def drain(self, timeout: float) -> bool:
        """Refuse new requests, then wait for those in progress to finish; True when none remain.

        Refusing matters for keep-alive connections: their handler threads outlive
        serve_forever() and would otherwise run a client's next request on a closed engine.
        """
        deadline = time.monotonic() + timeout
        with self.in_flight_lock:
            self.closing = True
            while self.in_flight > 0:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.in_flight_lock.wait(remaining)
        return True


class _Body:
    """The request body as a stream of raw chunks (Content-Length or chunked)."""

    def __init__(self, handler: BaseHTTPRequestHandler):
        self._rfile = handler.rfile
        self.chunked = "chunked" in handler.headers.get("Transfer-Encoding", "").lower()
        length = handler.headers.get("Content-Length")
        try:
            self._remaining = int(length) if length else 0
        except ValueError:
            raise ClickHouseError(36, f"Invalid Content-Length header {length!r}") from None
        self.finished = not self.chunked and self._remaining == 0
        # Set when the client stopped sending mid-body: the connection cannot be reused.
        self.timed_out = False

    def raw_chunks(self) -> Iterator[bytes]:
        try:
            yield from self._raw_chunks()
        except TimeoutError:
            self.finished = self.timed_out = True
            raise ClickHouseError(
                209, "Timeout exceeded while reading the request body from the client", "SOCKET_TIMEOUT"
            ) from None

    def _raw_chunks(self) -> Iterator[bytes]:
        if self.chunked:
            while True:
                line = self._rfile.readline(1024)
                try:
                    size = int(line.split(b";", 1)[0].strip(), 16)
                except ValueError:
                    raise ClickHouseError(36, f"Malformed chunked request body: bad chunk size line {line!r}") from None
                if size == 0:
                    while self._rfile.readline(1024).strip():  # trailers
                        pass
                    self.finished = True
                    return
                data = self._rfile.read(size)
                if len(data) < size:
                    raise ClickHouseError(33, "Request body ended in the middle of a chunk", "CANNOT_READ_ALL_DATA")
                self._rfile.readline(16)
                yield data
        else:
            while self._remaining > 0:
                data = self._rfile.read(min(READ_CHUNK, self._remaining))
                if not data:
                    raise ClickHouseError(
                        33,
                        f"Request body ended {self._remaining} bytes before its Content-Length",
                        "CANNOT_READ_ALL_DATA",
                    )
                self._remaining -= len(data)
                yield data
            self.finished = True

    def drain(self) -> None:
        """Consume what is left so the connection can serve its next request."""
        for _ in self.raw_chunks():
            pass


class _PrefixedStream:
    """A byte stream that can be probed at its start and then read on from there."""

    def __init__(self, prefix: bytes, chunks: Iterator[bytes]):
        self._buffer = prefix
        self._chunks = chunks
        self.exhausted = False

    def probe(self, size: int) -> bytes:
        while len(self._buffer) < size and not self.exhausted:
            try:
                self._buffer += next(self._chunks)
            except StopIteration:
                self.exhausted = True
        return self._buffer

    def skip(self, count: int) -> None:
        self._buffer = self._buffer[count:]

    def read_all(self, limit: int) -> bytes:
        data = self.probe(limit + 1)
        if len(data) > limit:
            raise ClickHouseError(36, f"Statement is larger than {limit} bytes", "QUERY_IS_TOO_LARGE")
        return data

    def chunks(self) -> Iterator[bytes]:
        if self._buffer:
            yield self._buffer
            self._buffer = b""
        yield from self._chunks
        self.exhausted = True


class ClickHouseRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "ClickHouse"
    sys_version = ""
    server: ClickHouseHTTPServer

    def setup(self) -> None:
        super().setup()
        # Without TCP_NODELAY every keep-alive request waits ~40 ms on delayed ACKs.
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # ---- timeouts (ClickHouse's: an idle keep-alive connection, a stalled request, a stalled reader) ----

    def handle_one_request(self) -> None:
        # Waiting for the next request line: the keep-alive timeout. The stdlib closes the
        # connection when it expires.
        self.request.settimeout(self.server.options.keep_alive_timeout)
        super().handle_one_request()

    def parse_request(self) -> bool:
        # The request line arrived: headers and body must follow within the receive timeout.
        self.request.settimeout(self.server.options.receive_timeout)
        return super().parse_request()

    def send_response(self, code: int, message: str | None = None) -> None:
        self.request.settimeout(self.server.options.send_timeout)
        super().send_response(code, message)

    def end_headers(self) -> None:
        if not self.close_connection and self.request_version == "HTTP/1.1":
            self.send_header("Keep-Alive", f"timeout={max(1, round(self.server.options.keep_alive_timeout))}")
        super().end_headers()

    # Requests too broken to name an HTTP version still get a status line and headers.
    default_request_version = "HTTP/1.0"

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """Protocol-level errors found by the stdlib parser, answered the ClickHouse way."""
        self.close_connection = True
        error = ClickHouseError(1000, f"Malformed HTTP request: {message or code}", "POCO_EXCEPTION")
        payload = error.wire_body().encode()
        try:
            self.send_response(code, message)
            self.send_header("X-ClickHouse-Exception-Code", str(error.code))
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except OSError:
            pass

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature from the stdlib
        log.debug("%s - %s", self.address_string(), format % args)

    # ---- routing ------------------------------------------------------------

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/ping", "/replicas_status"):
            self._send_plain(200, b"Ok.\n")
            return
        if path == "/" and "query=" not in self.path:
            self._send_plain(200, b"Ok.\n")
            return
        self._handle_query()

    def do_POST(self) -> None:
        self._handle_query()

    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_PUT(self) -> None:
        self._handle_query()

    # ---- the query path -------------------------------------------------------

    def _handle_query(self) -> None:
        query_id = str(uuid.uuid4())
        if not self.server.request_started():
            self.close_connection = True
            # NETWORK_ERROR: clients (the loader among them) retry it, as they would a refused connection
            self._send_error(
                ClickHouseError(210, "The ClickHouse server is shutting down", "NETWORK_ERROR"), query_id, None
            )
            return
        body: _Body | None = None
        try:
            self._check_browser_and_host()
            url = urlsplit(self.path)
            if url.path not in ("/", "/query", ""):
                raise ClickHouseError(
                    1, f"There is no handler {url.path} for the HTTP request; use / or /ping", "UNSUPPORTED_METHOD"
                )
            params = dict(parse_qsl(url.query, keep_blank_values=True))
            query_id = params.get("query_id") or self.headers.get("X-ClickHouse-Query-Id") or query_id
            body = _Body(self)
            chunks = decompress_chunks(body.raw_chunks(), self.headers.get("Content-Encoding"))
            content_type = self.headers.get("Content-Type", "")
            if content_type.lower().startswith("multipart/form-data"):
                form = parse_multipart(b"".join(chunks), content_type)
                params.update({name: value.decode() for name, value in form.items()})
                chunks = iter(())
            self._authenticate(params)
            self._execute(params, chunks, query_id)
        except ClickHouseError as exc:
            self._send_error(exc, query_id, body)
        except Exception as exc:  # anything else still gets a ClickHouse-style answer
            log.exception("unexpected error serving a request")
            self._send_error(ClickHouseError(1001, f"{type(exc).__name__}: {exc}", "STD_EXCEPTION"), query_id, body)
        finally:
            self.server.request_finished()

    def _check_browser_and_host(self) -> None:
        """Refuse what a web page could send: any Origin, and (on loopback) a foreign Host.

        Browsers add Origin to cross-site and POST requests; a page whose DNS name was
        re-pointed at 127.0.0.1 sends its own name as Host. Neither can be a real client here.
        """
        origin = self.headers.get("Origin")
        if origin is not None:
            self.close_connection = True
            raise access_denied(
                f"requests with an Origin header ({origin}) are refused: web pages must not drive the embedded "
                "server; use a ClickHouse client"
            )
        host = self.headers.get("Host")
        if host is not None and self.server.loopback_only and not host_header_is_loopback(host):
            self.close_connection = True
            raise access_denied(
                f"Host {host!r} is not a loopback name or address; the server listens on "
                f"{self.server.options.host} and answers requests for localhost, 127.0.0.1 or [::1] only"
            )

    def _authenticate(self, params: dict[str, str]) -> None:
        user = self.headers.get("X-ClickHouse-User") or params.get("user")
        password = self.headers.get("X-ClickHouse-Key") or params.get("password")
        auth = self.headers.get("Authorization", "")
        if auth.lower().startswith("basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                raise ClickHouseError(516, "Malformed Basic authorization header") from None
        user = user or "default"
        password = password or ""
        options = self.server.options
        peer = str(self.client_address[0])
        if user != options.user or not secrets.compare_digest(password.encode(), options.password.encode()):
            # Queues behind earlier failures from the same address, then waits what it has earned.
            self.server.auth_throttle.failed(peer)
            raise ClickHouseError(
                516,
                f"{user}: Authentication failed: password is incorrect, or there is no user with such name",
                "AUTHENTICATION_FAILED",
            )
        if not options.password and not is_loopback_peer(peer):
            raise ClickHouseError(
                516,
                f"{user}: Authentication failed: the empty default password is accepted from loopback only "
                f"(this request came from {peer}); start the server with EVENTHOUSE_CLICKHOUSE_PASSWORD set",
                "AUTHENTICATION_FAILED",
            )

    def _execute(self, params: dict[str, str], chunks: Iterator[bytes], query_id: str) -> None:
        query_params = {name[6:]: value for name, value in params.items() if name.startswith("param_")}
        settings = {
            name: value
            for name, value in params.items()
            if name not in TRANSPORT_PARAMS and not name.startswith("param_")
        }
        # Checked before anything is applied to a handle.
        self.server.guard.check_url_settings(settings)
        database = params.get("database") or self.headers.get("X-ClickHouse-Database")
        default_format = params.get("default_format") or self.headers.get("X-ClickHouse-Format") or "TabSeparated"
        wait_end = params.get("wait_end_of_query", "0") not in ("0", "", "false")

        query_text = params.get("query", "").encode()
        body_stream = _PrefixedStream(b"", chunks)
        if query_text and body_stream.probe(1):
            # ClickHouse joins the query parameter and the body into one statement.
            query_text += b"\n"
        stream = _PrefixedStream(query_text, body_stream.chunks())
        probe = stream.probe(INSERT_HEAD_PROBE)
        # INSERT ... VALUES streams too: its data then reaches the Values parser only, never SQL.
        head = split_insert(probe) or split_values_insert(probe)

        session_id = params.get("session_id")
        if session_id:
            timeout = params.get("session_timeout")
            try:
                timeout_value = float(timeout) if timeout else None
            except ValueError:
                raise ClickHouseError(36, f"Invalid session_timeout {timeout!r}") from None
            check = params.get("session_check", "0") not in ("0", "")
            handle_context = self.server.engine.session(session_id, timeout_value, check)
        else:
            # A session-less request always starts in the default database.
            database = database or self.server.options.default_database
            handle_context = self.server.engine.pooled()
        with handle_context as session:
            if session.protocol_state is None:
                session.protocol_state = _SessionState()
            checked_head = head
            if head is not None:
                head, settings = _with_insert_settings(head, settings)
            self._prepare_handle(session.handle, database, settings, session.protocol_state)
            if checked_head is not None:
                # The statement as the client sent it (what it adds is checked), with its format.
                self._guard(session, f"{checked_head.statement}\nFORMAT {checked_head.data_format}", query_params, True)
            self._run(session, head, stream, query_params, default_format, wait_end, query_id)

    def _prepare_handle(
        self, handle: Any, database: str | None, settings: dict[str, str], state: _SessionState
    ) -> None:
        try:
            if database and database != state.database:
                handle.query(f"USE `{database.replace('`', '``')}`", "TabSeparated")
                state.database = database
            stale = [name for name in state.applied if state.applied[name] != settings.get(name)]
            restore = {}
            for name in stale:
                value, changed = state.originals.pop(name)
                del state.applied[name]
                if name not in settings:
                    restore[name] = (value, changed)
            for name, (value, changed) in restore.items():
                target = settings_statement({name: value}) if changed else f"SET {name} = DEFAULT"
                handle.query(target, "TabSeparated")
            new = {name: value for name, value in settings.items() if state.applied.get(name) != value}
            if new:
                names = ", ".join("'" + name.replace("'", "\\'") + "'" for name in new if name.isidentifier())
                if names:
                    rows = handle.query(
                        f"SELECT name, value, changed FROM system.settings WHERE name IN ({names})",
                        "JSONEachRow",
                    ).bytes()
                    for line in rows.splitlines():
                        row = json.loads(line)
                        state.originals.setdefault(row["name"], (row["value"], bool(row["changed"])))
                handle.query(settings_statement(new), "TabSeparated")
                for name in new:
                    state.originals.setdefault(name, ("", False))
                    state.applied[name] = new[name]
        except ClickHouseError:
            raise
        except Exception as exc:
            raise _engine_error(exc) from exc

    def _run(
        self,
        session: Session,
        head: Any,
        stream: _PrefixedStream,
        query_params: dict[str, str],
        default_format: str,
        wait_end: bool,
        query_id: str,
    ) -> None:
        handle = session.handle
        if head is not None:
            stream.skip(head.data_offset)
            self._insert(handle, head.statement, head.data_format, stream, query_id)
            return
        sql = stream.read_all(MAX_STATEMENT_BYTES).decode("utf-8", errors="replace").strip()
        if not sql:
            raise ClickHouseError(62, "Empty query", "SYNTAX_ERROR")
        self._guard(session, sql, query_params, False)
        keyword = leading_keyword(sql)
        if keyword == "USE":
            session.protocol_state.database = None  # the next `database` parameter must apply again
        if session.pooled and (keyword in ("SET", "USE") or "TEMPORARY" in sql.upper()):
            session.discard = True  # session-less: what this statement sets must not outlive it
        explicit = trailing_format(sql)
        has_result = returns_result_set(sql)
        output_format = explicit or default_format
        if streamable_statement(sql) and output_format in STREAMABLE_FORMATS and not wait_end:
            self._stream_query(session, sql, output_format, query_params, query_id)
        else:
            self._materialized_query(handle, sql, output_format, has_result, query_params, query_id)

    def _guard(self, session: Session, sql: str, query_params: dict[str, str], insert_head: bool) -> None:
        """Refuse the statement (ClickHouse-style error) unless the guard allows it; GET is read-only."""
        try:
            self.server.guard.check(
                HandleGuardEngine(session.handle),
                sql,
                query_params,
                readonly=self.command == "GET",
                insert_head=insert_head,
            )
        except ClickHouseError as error:
            if error.code in (497, 164, 291):
                log.info("refused from %s: %s", self.client_address[0], error.message)
            raise

    def _insert(self, handle: Any, statement: str, data_format: str, stream: _PrefixedStream, query_id: str) -> None:
        stats = RequestStats()
        try:
            inserter = handle.send_insert(statement, data_format)
        except Exception as exc:
            raise _engine_error(exc) from exc
        finished = False
        try:
            for chunk in stream.chunks():
                if chunk:
                    inserter.append(chunk)
            result = inserter.finish()
            finished = True
        except ClickHouseError:
            raise
        except Exception as exc:
            raise _engine_error(exc) from exc
        finally:
            if not finished:
                # Cancel so the engine stops reading. As in ClickHouse, an insert of one block (up to
                # max_insert_block_size rows) is all or nothing; earlier blocks of a huge one stay.
                with contextlib.suppress(Exception):
                    inserter.cancel()
        stats.written_rows = int(result.rows_written)
        stats.written_bytes = int(result.bytes_written)
        stats.elapsed_ns = int(result.elapsed * 1e9)
        self._send_result(200, b"", query_id, stats, result_format=None)

    def _empty_native(self, handle: Any, sql: str, query_params: dict[str, str]) -> bytes:
        """The zero-row Native block ClickHouse sends for an empty result (chDB sends nothing)."""
        base = strip_trailing_format(sql)
        try:
            described = handle.query(f"DESCRIBE TABLE ({base})", "TabSeparated", params=query_params).bytes()
            return native_header_block(parse_describe(described))
        except Exception:
            # Not describable as a subquery (SHOW ..., EXISTS ...): ask for the result's metadata.
            meta = json.loads(handle.query(base, "JSONCompact", params=query_params).bytes() or b"{}").get("meta", [])
            return native_header_block((column["name"], column["type"]) for column in meta)

    def _materialized_query(
        self,
        handle: Any,
        sql: str,
        output_format: str,
        has_result: bool,
        query_params: dict[str, str],
        query_id: str,
    ) -> None:
        stats = RequestStats()
        try:
            result = handle.query(sql, output_format, params=query_params)
            payload = result.bytes() or b""
            if not payload and has_result and output_format == "Native":
                payload = self._empty_native(handle, sql, query_params)
        except Exception as exc:
            raise _engine_error(exc) from exc
        _result_stats(result, stats)
        stats.result_bytes = len(payload)
        self._send_result(200, payload, query_id, stats, result_format=output_format if has_result else None)

    def _stream_query(
        self, session: Session, sql: str, output_format: str, query_params: dict[str, str], query_id: str
    ) -> None:
        handle = session.handle
        try:
            streaming = handle.send_query(sql, output_format, params=query_params)
        except Exception as exc:
            raise _engine_error(exc) from exc
        try:
            # The first block is read before the status line, so errors found while
            # planning or starting the query still get a proper error status.
            try:
                first = next(streaming, None)
            except Exception as exc:
                raise _engine_error(exc) from exc
            first_bytes = first.bytes() if first is not None else b""
            if not first_bytes and output_format == "Native":
                first_bytes = self._empty_native(handle, sql, query_params)
            exception_tag = secrets.token_hex(8)
            self.send_response(200)
            self._common_headers(query_id, RequestStats(), output_format)
            self.send_header("X-ClickHouse-Exception-Tag", exception_tag)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._write_chunk(first_bytes)
            while True:
                try:
                    block = next(streaming, None)
                except Exception as exc:
                    error = _engine_error(exc)
                    message = error.wire_body().encode()
                    # ClickHouse's in-band exception block, which clients look for in the last chunk.
                    self._write_chunk(
                        b"__exception__\r\n"
                        + exception_tag.encode()
                        + b"\r\n"
                        + message
                        + f"{len(message)} {exception_tag}\r\n__exception__\r\n".encode()
                    )
                    self.wfile.write(b"0\r\n\r\n")
                    self.close_connection = True
                    session.tainted = True
                    return
                if block is None:
                    break
                self._write_chunk(block.bytes())
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
            session.tainted = True
        finally:
            with contextlib.suppress(Exception):
                streaming.close()

    # ---- response writing -------------------------------------------------------

    def _write_chunk(self, data: bytes) -> None:
        if data:
            self.wfile.write(b"%x\r\n" % len(data) + data + b"\r\n")

    def _common_headers(self, query_id: str, stats: RequestStats, result_format: str | None) -> None:
        self.send_header("X-ClickHouse-Query-Id", query_id)
        self.send_header("X-ClickHouse-Server-Display-Name", SERVER_NAME)
        self.send_header("X-ClickHouse-Timezone", self.server.timezone)
        self.send_header("X-ClickHouse-Summary", stats.header())
        if result_format:
            self.send_header("X-ClickHouse-Format", result_format)
            self.send_header(
                "Content-Type",
                "application/octet-stream" if result_format in ("Native", "RowBinary") else "text/plain; charset=UTF-8",
            )
        else:
            self.send_header("Content-Type", "text/plain; charset=UTF-8")

    def _send_result(
        self, status: int, payload: bytes, query_id: str, stats: RequestStats, result_format: str | None
    ) -> None:
        self.send_response(status)
        self._common_headers(query_id, stats, result_format)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload:
            self.wfile.write(payload)

    def _send_plain(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=UTF-8")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def _send_error(self, error: ClickHouseError, query_id: str, body: _Body | None) -> None:
        if body is not None and body.timed_out:
            self.close_connection = True  # the rest of the body may still arrive: the stream is out of step
        if body is not None and not body.finished:
            try:
                body.drain()
            except Exception:
                self.close_connection = True
        payload = error.wire_body().encode()
        try:
            self.send_response(error.http_status)
            self.send_header("X-ClickHouse-Exception-Code", str(error.code))
            self.send_header("X-ClickHouse-Query-Id", query_id)
            self.send_header("X-ClickHouse-Server-Display-Name", SERVER_NAME)
            self.send_header("Content-Type", "text/plain; charset=UTF-8")
            self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


def _enter_user_files(user_files: Path) -> bool:
    """Make user_files_path the working directory; True when relative paths then resolve inside it.

    chDB runs in clickhouse-local mode, which resolves relative file() paths against the
    process's working directory and never enforces user_files_path. Only a server that owns its
    process (serve() in the main thread, as `eventhouse stack clickhouse` runs it) changes the
    directory; in a thread of another process the guard accepts absolute paths under
    user_files_path only, and the host process's directory is left alone.
    """
    user_files.mkdir(parents=True, exist_ok=True)
    if threading.current_thread() is not threading.main_thread():
        log.info("serving from a thread: relative file paths are refused (the working directory is not changed)")
        return False
    # Imports must never come from user_files (a client can write files there): pin sys.path first.
    sys.path[:] = [os.path.abspath(entry) if entry else os.getcwd() for entry in sys.path]
    os.chdir(user_files)
    return True


def serve(options: ServerOptions, ready: threading.Event | None = None) -> None:
    """Run the server in the foreground until SIGTERM or SIGINT, then shut down cleanly.

    In the main thread this changes the process's working directory to user_files_path.
    """
    options.validate()
    os.environ["TZ"] = options.timezone
    time.tzset()
    data_dir = options.data_dir.resolve()  # before the working directory changes
    options = dataclasses.replace(options, data_dir=data_dir, user_files_path=options.user_files)
    relative_paths = _enter_user_files(options.user_files)
    engine = ChdbEngine(data_dir)
    engine.open()
    try:
        engine.use_atomic_default_database()
        for database in (options.default_database, *options.ensure_databases):
            engine.query(f"CREATE DATABASE IF NOT EXISTS `{database}`")
        server = ClickHouseHTTPServer(options, engine, relative_paths)
        server.timezone = engine.query("SELECT timezone()").decode().strip()
    except BaseException:
        engine.close()
        raise
    stopping = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        if not stopping.is_set():
            stopping.set()
            log.info("signal %s: shutting down", signum)
            threading.Thread(target=server.shutdown, daemon=True).start()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, request_stop)
        signal.signal(signal.SIGINT, request_stop)
    log.info(
        "ClickHouse HTTP on http://%s:%s, data in %s, user files in %s, external access %s",
        options.host,
        options.port,
        options.data_dir,
        options.user_files,
        "allowed" if options.allow_external_access else "refused",
    )
    if ready is not None:
        ready.set()
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        # Requests already accepted finish before the engine closes, so an insert
        # that was acknowledged is never cut off.
        if not server.drain(timeout=30.0):
            log.warning("shutting down with requests still running after 30 s")
        engine.close()
        log.info("statement guard: %s", json.dumps(server.guard.stats.as_dict()))
        log.info("ClickHouse HTTP server stopped")
