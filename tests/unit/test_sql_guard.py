"""The statement guard and network rules of the embedded server, without chDB.

The engine's answers (EXPLAIN AST dumps, normalized and formatted statements) are the ones
chDB gave for these statements, recorded in sql_guard_chdb_outputs.json.
"""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

import pytest

from stack.clickhouse_protocol import ClickHouseError, split_values_insert
from stack.network_guard import (
    AuthThrottle,
    host_header_is_loopback,
    host_header_name,
    is_loopback_bind,
    is_loopback_peer,
)
from stack.sql_guard import (
    DICTIONARY_SOURCES,
    ENGINES,
    SCALAR_FUNCTIONS,
    TABLE_FUNCTIONS,
    AstFormatError,
    GuardPolicy,
    StatementGuard,
    parse_ast_dump,
    path_refusal,
    setting_names_in,
    shift_error_positions,
    string_literal,
)

RECORDED = json.loads((Path(__file__).with_name("sql_guard_chdb_outputs.json")).read_text())


class RecordedEngine:
    """Answers the guard's helper queries from chDB's recorded outputs, counting the calls."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def explain_ast(self, sql: str, params: Mapping[str, str]) -> str:
        self.calls.append("explain")
        return RECORDED[sql]["ast"]

    def normalize(self, sql: str) -> str:
        self.calls.append("normalize")
        return RECORDED[sql]["normalized"]

    def format_single_line(self, sql: str) -> str:
        self.calls.append("format")
        return RECORDED[sql]["formatted"]


@pytest.fixture()
def user_files(tmp_path: Path) -> Path:
    path = tmp_path / "user_files"
    (path / "data").mkdir(parents=True)
    return path


def _guard(user_files: Path, **policy: bool) -> StatementGuard:
    return StatementGuard(GuardPolicy(user_files, **policy))


def _refusal(guard: StatementGuard, sql: str, **kwargs: bool) -> ClickHouseError:
    with pytest.raises(ClickHouseError) as raised:
        guard.check(RecordedEngine(), sql, {}, **kwargs)
    return raised.value


# ---- the AST dump -----------------------------------------------------------------------------


def test_dump_parses_into_a_tree_with_labels():
    root = parse_ast_dump(RECORDED["SELECT * FROM file('/etc/passwd', LineAsString)"]["ast"])
    assert root.label == "SelectWithUnionQuery"
    functions = [node for node, _ in root.walk() if node.kind == "Function"]
    assert [f.name for f in functions] == ["file"]
    path = functions[0].children[0].children[0]
    assert string_literal(path) == "/etc/passwd"


def test_an_identifier_with_a_line_break_breaks_the_dump_and_is_refused():
    # chDB prints identifiers unescaped: `a\nb` adds a line that must not be read as a node.
    with pytest.raises(AstFormatError):
        parse_ast_dump(
            "SelectWithUnionQuery (children 1)\n ExpressionList (children 1)\n"
            "  Literal UInt64_1 (alias a\n Function file)\n"
        )


def test_only_newlines_split_dump_lines():
    root = parse_ast_dump("SelectWithUnionQuery (children 1)\n Literal 'a\x0bb\x1cc'\n")
    assert string_literal(root.children[0]) == "a\x0bb\x1cc"


def test_string_literals_unescape_and_ignore_aliases():
    root = parse_ast_dump("ExpressionList (children 2)\n Literal 'it\\'s\\n' (alias x)\n Literal UInt64_1\n")
    assert string_literal(root.children[0]) == "it's\n"
    assert string_literal(root.children[1]) is None


# ---- paths ------------------------------------------------------------------------------------


def test_paths_stay_inside_user_files(user_files: Path, tmp_path: Path):
    policy = GuardPolicy(user_files)
    assert path_refusal("data/a.csv", policy) is None
    assert path_refusal(f"{user_files}/data/*.csv", policy) is None
    assert path_refusal("data/part_{1..9}.csv", policy) is None
    assert path_refusal("data/{a,b}.csv", policy) is None
    assert "outside user_files_path" in path_refusal("/etc/passwd", policy)
    assert "outside user_files_path" in path_refusal(f"{user_files}_other/x", policy)
    assert "'..'" in path_refusal("data/../../x", policy)
    assert "'..'" in path_refusal(f"{user_files}/../x", policy)
    assert "glob alternative" in path_refusal("{/etc/passwd,x}", policy)
    assert "control characters" in path_refusal("a\0b", policy)
    (user_files / "escape").symlink_to(tmp_path)
    assert "symbolic link" in path_refusal("escape/x.csv", policy)


def test_relative_paths_need_the_server_to_own_its_working_directory(user_files: Path):
    policy = GuardPolicy(user_files, relative_paths=False)
    assert "use an absolute path under" in path_refusal("a.csv", policy)
    assert path_refusal(f"{user_files}/a.csv", policy) is None


# ---- statements -------------------------------------------------------------------------------


def test_file_outside_user_files_is_refused_with_the_path(user_files: Path):
    error = _refusal(_guard(user_files), "SELECT * FROM file('/etc/passwd', LineAsString)")
    assert (error.code, error.name) == (497, "ACCESS_DENIED")
    assert f"file('/etc/passwd'): path is outside user_files_path {user_files}" in error.message


def test_scalar_file_inside_user_files_is_allowed(user_files: Path):
    verdict = _guard(user_files).check(RecordedEngine(), "SELECT file('data/a.csv')", {})
    assert not verdict.writes


def test_network_table_functions_need_external_access(user_files: Path):
    sql = "SELECT * FROM url('http://example.com/x.csv', CSV)"
    error = _refusal(_guard(user_files), sql)
    assert "url reaches other hosts" in error.message and "--allow-external-access" in error.message
    _guard(user_files, allow_external_access=True).check(RecordedEngine(), sql, {})
    # Nested where no TableExpression is their parent, they are still classified.
    assert (
        "url reaches other hosts"
        in _refusal(_guard(user_files), "SELECT * FROM loop(url('http://example.com/x'))").message
    )


def test_programs_and_backups_are_refused_even_with_external_access(user_files: Path):
    guard = _guard(user_files, allow_external_access=True)
    assert "runs a program on the server" in _refusal(guard, "SELECT * FROM executable('run.sh', TSV, 'a Int')").message
    assert "BACKUP writes backups" in _refusal(guard, "BACKUP TABLE t TO Disk('backups', 'x.zip')").message
    assert "access management" in _refusal(guard, "GRANT SELECT ON *.* TO u").message


def test_into_outfile_is_refused(user_files: Path):
    assert "INTO OUTFILE" in _refusal(_guard(user_files), "SELECT 1 INTO OUTFILE 'out.txt'").message


def test_multi_statements_are_refused_before_explain_runs_them(user_files: Path):
    engine = RecordedEngine()
    with pytest.raises(ClickHouseError) as error:
        _guard(user_files).check(engine, "SELECT 1; SELECT 2", {})
    assert (error.value.code, error.value.name, error.value.message) == (
        62,
        "SYNTAX_ERROR",
        "Multi-statements are not allowed",
    )
    assert engine.calls == ["normalize"]
    # A semicolon inside a literal is no separator.
    _guard(user_files).check(RecordedEngine(), "SELECT 'a;b'", {})


def test_get_is_read_only(user_files: Path):
    guard = _guard(user_files)
    sql = "CREATE TABLE t (a Int32) ENGINE = MergeTree ORDER BY a"
    error = _refusal(guard, sql, readonly=True)
    assert (error.code, error.name) == (164, "READONLY")
    assert "method GET implies readonly" in error.message
    assert guard.check(RecordedEngine(), sql, {}).writes
    assert not guard.check(RecordedEngine(), "SELECT count() FROM numbers(10)", {}, readonly=True).writes


def test_engines_are_classified_only_where_the_statement_names_one(user_files: Path):
    guard = _guard(user_files)
    guard.check(RecordedEngine(), "CREATE TABLE t (a Int32) ORDER BY tuple()", {})  # tuple() is ORDER BY
    error = _refusal(guard, "CREATE TABLE t (a Int32) ENGINE = Kafka SETTINGS kafka_broker_list = 'h:9092'")
    assert "ENGINE = Kafka" in error.message


def test_what_settings_hide_is_read_from_the_normalized_text(user_files: Path):
    guard = _guard(user_files)
    disk = "CREATE TABLE t (a Int32) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = '/x/')"
    assert "disk(...) appears where the server cannot check it" in _refusal(guard, disk).message
    filters = "SELECT 1 SETTINGS additional_table_filters = {'t': 'a > 1'}"
    assert "setting additional_table_filters: runs SQL given as a string" in _refusal(guard, filters).message


def test_system_commands_are_allowlisted(user_files: Path):
    guard = _guard(user_files)
    guard.check(RecordedEngine(), "SYSTEM FLUSH LOGS", {})
    assert "SYSTEM SHUTDOWN is not allowed" in _refusal(guard, "SYSTEM SHUTDOWN").message


def test_inserts_carry_no_inline_data_past_the_guard(user_files: Path):
    guard = _guard(user_files)
    guard.check(RecordedEngine(), "INSERT INTO t (a) FORMAT JSONEachRow", {}, insert_head=True)
    assert "could not separate its data" in _refusal(guard, "INSERT INTO t VALUES (1)").message


def test_dictionary_sources(user_files: Path):
    guard = _guard(user_files)
    local = "CREATE DICTIONARY d (a UInt64) PRIMARY KEY a SOURCE(CLICKHOUSE(table 'src')) LAYOUT(FLAT()) LIFETIME(0)"
    guard.check(RecordedEngine(), local, {})
    query = (
        "CREATE DICTIONARY d (a UInt64) PRIMARY KEY a SOURCE(CLICKHOUSE(query 'SELECT 1')) LAYOUT(FLAT()) LIFETIME(0)"
    )
    assert "runs SQL given as a string" in _refusal(guard, query).message
    remote = (
        "CREATE DICTIONARY d (a UInt64) PRIMARY KEY a SOURCE(CLICKHOUSE(host 'db.example' table 'src')) "
        "LAYOUT(FLAT()) LIFETIME(0)"
    )
    assert "--allow-external-access" in _refusal(guard, remote).message


def test_calls_the_dump_hides_are_found_in_the_text(user_files: Path):
    guard = _guard(user_files)
    # `* APPLY(file)` applies file() to every column; the dump shows a bare ColumnsApplyTransformer.
    apply = "SELECT * APPLY(file) FROM (SELECT '/etc/hostname' AS p)"
    assert "APPLY with file" in _refusal(guard, apply).message
    # SHOW COLUMNS' WHERE is not in its dump at all.
    show = "SHOW COLUMNS FROM t WHERE file('/etc/hostname') != ''"
    assert "file(...) appears where the server cannot check it" in _refusal(guard, show).message


def test_standard_streams_are_not_paths(user_files: Path):
    assert "standard stream" in _refusal(_guard(user_files), "SELECT * FROM file('stdin', LineAsString)").message


def test_attach_from_a_path_is_refused(user_files: Path):
    sql = "ATTACH TABLE t FROM '/var/lib/x' (a Int32) ENGINE = MergeTree ORDER BY a"
    assert "ATTACH ... FROM '<path>'" in _refusal(_guard(user_files), sql).message


def test_identifiers_with_line_breaks_are_refused(user_files: Path):
    assert "line breaks" in _refusal(_guard(user_files), "SELECT `a\nb` FROM t").message


def test_verdicts_are_cached_per_statement_and_parameters(user_files: Path):
    guard = _guard(user_files)
    engine = RecordedEngine()
    for _ in range(3):
        guard.check(engine, "SELECT count() FROM numbers(10)", {})
    assert engine.calls == ["explain"]  # its text names nothing that could hide: no normalization
    guard.check(engine, "SELECT count() FROM numbers(10)", {"x": "1"})
    assert engine.calls == ["explain", "explain"]
    for _ in range(2):  # refusals are cached too, and raised afresh each time
        with pytest.raises(ClickHouseError):
            guard.check(engine, "SELECT * FROM file('/etc/passwd', LineAsString)", {})
    stats = guard.stats.as_dict()
    assert (stats["checks"], stats["cache_hits"], stats["cache_misses"], stats["refused"]) == (6, 3, 3, 2)


def test_placeholders_bound_by_the_session_are_never_answered_from_the_cache(user_files: Path):
    """`SET param_p = ...` in a session binds {p:String}; the cache key only knows the request's own."""

    class SessionEngine(RecordedEngine):
        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

        def explain_ast(self, sql: str, params: Mapping[str, str]) -> str:
            self.calls.append("explain")
            return RECORDED["SELECT * FROM file('/etc/passwd', LineAsString)"]["ast"].replace("/etc/passwd", self.path)

        def normalize(self, sql: str) -> str:
            self.calls.append("normalize")
            return "SELECT * FROM file(?, LineAsString)\n"

    guard = _guard(user_files)
    sql = "SELECT * FROM file({p:String}, LineAsString)"
    guard.check(SessionEngine("data/a.csv"), sql, {})
    with pytest.raises(ClickHouseError) as error:
        guard.check(SessionEngine("/etc/passwd"), sql, {})
    assert "outside user_files_path" in error.value.message


def test_url_settings_are_checked_by_name_and_value(user_files: Path):
    guard = _guard(user_files)
    guard.check_url_settings({"max_threads": "2", "default_table_engine": "MergeTree", "dialect": "clickhouse"})
    for settings, text in (
        ({"format_schema": "/etc/passwd:X"}, "names a file"),
        ({"default_table_engine": "URL"}, "local engine"),
        ({"dialect": "kusto"}, "ClickHouse SQL dialect"),
        ({"format_avro_schema_registry_url": "http://x"}, "--allow-external-access"),
    ):
        with pytest.raises(ClickHouseError) as error:
            guard.check_url_settings(settings)
        assert error.value.code == 497 and text in error.value.message


def test_setting_names_come_after_the_settings_keyword():
    assert setting_names_in("SELECT ? FROM t WHERE filter = ? SETTINGS max_threads = ?, `dialect` = ?") == {
        "max_threads",
        "dialect",
    }


def test_syntax_error_positions_refer_to_the_statement():
    assert (
        shift_error_positions("Syntax error: failed at position 19 (lv)", 12)
        == "Syntax error: failed at position 7 (lv)"
    )


def test_names_mean_the_same_in_every_table():
    """A lower-case name (file/File, url/URL, ...) is one kind whether function, engine or source."""
    kinds: dict[str, set[str]] = {}
    for table in (TABLE_FUNCTIONS, ENGINES, DICTIONARY_SOURCES, SCALAR_FUNCTIONS):
        for name, access in table.items():
            kinds.setdefault(name.lower(), set()).add(access.kind)
    # Except where the paths differ: file()'s path is checked, a file dictionary source's and a
    # Filesystem database's tables cannot be. Position-specific lookups keep them apart.
    assert {name: found for name, found in kinds.items() if len(found) > 1} == {
        "file": {"file", "forbidden"},
        "filesystem": {"file", "forbidden"},
    }


# ---- inserts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("statement", "head", "data"),
    [
        (b"INSERT INTO t VALUES (1), (2)", "INSERT INTO t", b" (1), (2)"),
        (
            b"/* c */ insert into t (a) settings x = 'VALUES' values ('a')",
            "insert into t (a) settings x = 'VALUES'",
            b" ('a')",
        ),
        (
            b"INSERT INTO t SETTINGS c = $$it's VALUES$$ VALUES (1)",
            "INSERT INTO t SETTINGS c = $$it's VALUES$$",
            b" (1)",
        ),
        (
            b"INSERT INTO FUNCTION file('a.csv', 'CSV', 'a Int') VALUES (1)",
            "INSERT INTO FUNCTION file('a.csv', 'CSV', 'a Int')",
            b" (1)",
        ),
    ],
)
def test_values_inserts_split_into_head_and_data(statement: bytes, head: str, data: bytes):
    found = split_values_insert(statement)
    assert found is not None and found.statement == head and found.data_format == "Values"
    assert statement[found.data_offset :] == data


@pytest.mark.parametrize(
    "statement", [b"INSERT INTO t SELECT * FROM values('a Int', 1)", b"INSERT INTO t FORMAT Values (1)", b"SELECT 1"]
)
def test_other_statements_are_not_values_inserts(statement: bytes):
    assert split_values_insert(statement) is None


# ---- network rules ----------------------------------------------------------------------------


def test_loopback_addresses_and_names():
    assert is_loopback_bind("127.0.0.1") and is_loopback_bind("::1") and is_loopback_bind("localhost")
    assert not is_loopback_bind("0.0.0.0") and not is_loopback_bind("::") and not is_loopback_bind("")
    assert is_loopback_peer("127.0.0.5") and is_loopback_peer("::ffff:127.0.0.1")
    assert not is_loopback_peer("10.1.2.3") and not is_loopback_peer("::ffff:10.1.2.3")


def test_host_headers():
    assert host_header_name("[::1]:8123") == "::1" and host_header_name("localhost:8123") == "localhost"
    for value in ("127.0.0.1:18123", "localhost", "LOCALHOST.", "[::1]:1", "::1"):
        assert host_header_is_loopback(value), value
    for value in ("evil.example:18123", "127.0.0.1.evil.example", "10.0.0.1", "localhost.evil.example"):
        assert not host_header_is_loopback(value), value


def test_wrong_passwords_wait_longer_and_longer_up_to_a_cap():
    slept: list[float] = []
    throttle = AuthThrottle(free_failures=3, base_delay=0.25, max_delay=2.0, sleep=slept.append)
    for _ in range(8):
        throttle.failed("10.0.0.1")
    assert slept == [0.25, 0.5, 1.0, 2.0, 2.0]
    throttle.failed("10.0.0.2")  # another address starts afresh
    assert slept == [0.25, 0.5, 1.0, 2.0, 2.0]


def test_failures_are_forgotten_after_a_quiet_period():
    now = [0.0]
    slept: list[float] = []
    throttle = AuthThrottle(
        free_failures=1, base_delay=1.0, forget_after=60.0, clock=lambda: now[0], sleep=slept.append
    )
    throttle.failed("a")
    throttle.failed("a")
    now[0] = 100.0
    throttle.failed("a")
    assert slept == [1.0]


def test_concurrent_failures_from_one_address_queue():
    """Guesses from one address wait one after another, never side by side."""
    waiting: Counter[str] = Counter()
    peak: Counter[str] = Counter()
    changed = threading.Condition()

    def sleep(delay: float) -> None:
        address = threading.current_thread().name.split("-")[0]
        with changed:
            waiting[address] += 1
            peak[address] = max(peak[address], waiting[address])
            changed.notify_all()
            # The throttle's delay: held until a second guess from this address waits beside it
            # (the failure this test exists to catch) or 50 ms have given the others time to arrive.
            changed.wait_for(lambda: waiting[address] > 1, timeout=0.05)
            waiting[address] -= 1

    throttle = AuthThrottle(free_failures=0, base_delay=0.01, sleep=sleep)
    addresses = ["a", "a", "a", "b", "b"]
    threads = [threading.Thread(target=throttle.failed, args=(a,), name=f"{a}-{i}") for i, a in enumerate(addresses)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert peak == {"a": 1, "b": 1}


def test_an_unreadable_dump_with_quoted_names_is_refused_as_such(user_files: Path):
    class BrokenDump(RecordedEngine):
        def explain_ast(self, sql: str, params: Mapping[str, str]) -> str:
            return "SelectWithUnionQuery (children 2)\n Literal UInt64_1\n"

    with pytest.raises(ClickHouseError) as error:
        _guard(user_files).check(BrokenDump(), "CREATE TABLE t (a Int32) ENGINE = MergeTree ORDER BY a", {})
    assert "could not analyse this statement" in error.value.message
