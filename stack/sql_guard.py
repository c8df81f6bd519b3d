"""Which statements the embedded ClickHouse server runs, decided from the engine's own parse.

chDB is ClickHouse in clickhouse-local mode: it reads and writes any file the process may
(`file()`, `INTO OUTFILE`, `File` engines, table names that are paths), reaches any host
(`url()`, `s3()`, `remote()`, ...) and runs programs (`executable()`), and its
`query()` runs every statement of `SELECT 1; DROP ...`. A server that answers HTTP must not
do that for whoever can reach its port, so each statement is checked before it runs:

1. Multi-statements are refused (as ClickHouse's HTTP interface does). A `;` that is not
   trailing is looked at in `normalizeQueryKeepNames` output, i.e. after ClickHouse's own
   lexer removed literals and comments: there it can only separate statements.
2. `EXPLAIN AST <statement>` gives the engine's parse tree as an indented dump, which is
   parsed into `AstNode`s and walked: table functions (under `TableExpression`, `INSERT INTO
   FUNCTION`, `CREATE TABLE ... AS f()`), engines (the first function of a `Storage
   definition`), dictionary sources and scalar functions are classified by allowlists as
   local, file (path confined to user_files_path), external (network; only with
   --allow-external-access) or forbidden; the root node names the statement kind (reads may
   run over GET, writes need POST, some kinds are never allowed).
3. What the dump hides (SETTINGS values, SHOW ... WHERE, APPLY's function, dictionary source
   keys and layouts, ATTACH's FROM path) is read from the normalized text, where every call of
   a non-local function must match one the tree showed; SYSTEM's command comes from
   `formatQuerySingleLine`. Both are ClickHouse's own lexer and formatter, not a hand-written
   SQL lexer. (A statement whose raw text names nothing dangerous skips the normalization.)

Verdicts are cached (LRU, keyed by statement text and query parameters), so the loader's and
dbt's repeated statements pay for the engine round trips once. Nothing here touches chDB:
the server passes a `GuardEngine` that runs the three helper queries on the request's handle.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from stack.clickhouse_protocol import ClickHouseError

# ---- classification -----------------------------------------------------------------------

LOCAL = "local"
FILE = "file"
EXTERNAL = "external"
FORBIDDEN = "forbidden"


@dataclass(frozen=True)
class Access:
    """What a table function, engine, dictionary source or scalar function reaches."""

    kind: str
    path_arg: int | None = None  # FILE: the argument holding the path
    path_optional: bool = False  # FILE: without that argument the data lives in the data directory
    reason: str = ""  # EXTERNAL / FORBIDDEN: what it does


def _many(kind: str, names: str, reason: str = "") -> dict[str, Access]:
    return {name: Access(kind, reason=reason) for name in names.split()}


_NETWORK = "reaches other hosts over the network"
_CLUSTER = "sends the query to the servers of a cluster"
_KEEPER = "coordinates through ZooKeeper/Keeper"
_RUNS_PROGRAM = "runs a program on the server"

# Every name in chDB's system.table_functions (a test fails when an upgrade adds one).
TABLE_FUNCTIONS: dict[str, Access] = {
    **_many(
        LOCAL,
        "SQLStandardValues dictionary format fuzzJSON fuzzQuery generateRandom generateSeries generate_series "
        "input loop merge mergeTreeAnalyzeIndexes mergeTreeAnalyzeIndexesUUID mergeTreeCodecBlockCounts "
        "mergeTreeIndex mergeTreeProjection mergeTreeTextIndex null numbers numbers_mt primes prometheusQuery "
        "prometheusQueryRange timeSeriesData timeSeriesMetricFamilies timeSeriesMetrics timeSeriesSamples "
        "timeSeriesSelector timeSeriesTags values view viewExplain viewIfPermitted zeros zeros_mt",
    ),
    "file": Access(FILE, 0),
    "filesystem": Access(FILE, 0, path_optional=True),
    "sqlite": Access(FILE, 0),
    "icebergLocal": Access(FILE, 0),
    "deltaLakeLocal": Access(FILE, 0),
    "paimonLocal": Access(FILE, 0),
    **_many(
        EXTERNAL,
        "azureBlobStorage bigquery cosn deltaLake deltaLakeAzure deltaLakeS3 gcs hdfs hudi iceberg icebergAzure "
        "icebergHDFS icebergS3 jdbc mongodb mysql odbc oss paimon paimonAzure paimonHDFS paimonS3 postgresql "
        "redis remote remoteSecure s3 url ytsaurus",
        _NETWORK,
    ),
    **_many(
        EXTERNAL,
        "azureBlobStorageCluster cluster clusterAllReplicas deltaLakeAzureCluster deltaLakeCluster "
        "deltaLakeS3Cluster fileCluster hdfsCluster hudiCluster icebergAzureCluster icebergCluster "
        "icebergHDFSCluster icebergLocalCluster icebergS3Cluster paimonAzureCluster paimonCluster "
        "paimonHDFSCluster paimonS3Cluster s3Cluster urlCluster",
        _CLUSTER,
    ),
    "executable": Access(FORBIDDEN, reason=_RUNS_PROGRAM),
    "python": Access(FORBIDDEN, reason="reads Python objects of the server process (chDB)"),
    "arrowstream": Access(FORBIDDEN, reason="reads Arrow streams registered in the server process (chDB)"),
    "eval": Access(FORBIDDEN, reason="runs SQL built from a string, which the server cannot check"),
}

# Every name in system.table_engines and system.database_engines. The two share names
# (Memory, SQLite, MySQL, S3, ...) and each shared name means the same for both.
ENGINES: dict[str, Access] = {
    **_many(
        LOCAL,
        "AggregatingMergeTree Alias Buffer CoalescingMergeTree CollapsingMergeTree Dictionary FuzzJSON FuzzQuery "
        "GenerateRandom GraphiteMergeTree Join Log Loop MaterializedView Memory Merge MergeTree Null "
        "ReplacingMergeTree Set StripeLog SummingMergeTree TimeSeries TinyLog VersionedCollapsingMergeTree View "
        "Atomic Ordinary",
    ),
    "File": Access(FILE, 1, path_optional=True),
    "FileLog": Access(FILE, 0),
    "SQLite": Access(FILE, 0),
    "EmbeddedRocksDB": Access(FILE, 1, path_optional=True),
    "IcebergLocal": Access(FILE, 0),
    "DeltaLakeLocal": Access(FILE, 0),
    "PaimonLocal": Access(FILE, 0),
    **_many(
        EXTERNAL,
        "AzureBlobStorage AzureQueue BigQuery COSN DataLakeCatalog DeltaLake DeltaLakeAzure DeltaLakeS3 "
        "Distributed GCS HDFS Hudi Iceberg IcebergAzure IcebergHDFS IcebergS3 JDBC Kafka MaterializedPostgreSQL "
        "MongoDB MySQL ODBC OSS Paimon PaimonAzure PaimonHDFS PaimonS3 PostgreSQL Redis Remote RemoteSecure S3 "
        "S3Queue URL YTsaurus",
        _NETWORK,
    ),
    **_many(
        EXTERNAL,
        "KeeperMap Replicated ReplicatedAggregatingMergeTree ReplicatedCoalescingMergeTree "
        "ReplicatedCollapsingMergeTree ReplicatedGraphiteMergeTree ReplicatedMergeTree ReplicatedReplacingMergeTree "
        "ReplicatedSummingMergeTree ReplicatedVersionedCollapsingMergeTree",
        _KEEPER,
    ),
    "Executable": Access(FORBIDDEN, reason=_RUNS_PROGRAM),
    "ExecutablePool": Access(FORBIDDEN, reason=_RUNS_PROGRAM),
    "ArrowStream": Access(FORBIDDEN, reason="reads Arrow streams registered in the server process (chDB)"),
    "QueryRunner": Access(FORBIDDEN, reason="is an internal chDB engine"),
    "Filesystem": Access(
        FORBIDDEN, reason="makes every path on the server a table name, which cannot be confined to user_files_path"
    ),
    "Backup": Access(FORBIDDEN, reason="reads backups from paths on the server"),
}

# Dictionary SOURCE(...) names as the AST dump spells them (lower case).
DICTIONARY_SOURCES: dict[str, Access] = {
    "clickhouse": Access(LOCAL),  # local only without host/port; keys are checked separately
    "null": Access(LOCAL),
    **_many(EXTERNAL, "http https mysql postgresql mongodb redis cassandra odbc jdbc ytsaurus", _NETWORK),
    "file": Access(FORBIDDEN, reason="reads a file by path; load it into a table with file() under user_files_path"),
    "yamlregexptree": Access(FORBIDDEN, reason="reads a file by path outside user_files_path"),
    "executable": Access(FORBIDDEN, reason=_RUNS_PROGRAM),
    "executable_pool": Access(FORBIDDEN, reason=_RUNS_PROGRAM),
    "library": Access(FORBIDDEN, reason="loads a shared library into the server process"),
}

# Scalar functions that reach outside the engine (lower case). Everything else is local.
SCALAR_FUNCTIONS: dict[str, Access] = {
    "file": Access(FILE, 0),
    "catboostevaluate": Access(FORBIDDEN, reason="loads a model library from a path on the server"),
    "disk": Access(FORBIDDEN, reason="defines a disk at a path or URL of its own; use a configured disk"),
    **_many(
        EXTERNAL,
        "aiclassify aiembed aiextract aifilter aigenerate airedact aisimilarity aitranslate",
        "sends data to an AI service over the network",
    ),
}

# Clickhouse dictionary source keys: these keep it on the local server.
_LOCAL_CLICKHOUSE_SOURCE_KEYS = frozenset({"db", "table", "user", "password", "update_field", "update_lag"})
_SQL_STRING_SOURCE_KEYS = frozenset({"query", "where", "invalidate_query"})


def _lower_map(*tables: Mapping[str, Access]) -> dict[str, Access]:
    merged: dict[str, Access] = {}
    for table in tables:
        for name, access in table.items():
            merged.setdefault(name.lower(), access)
    return merged


_ANY_CALL = _lower_map(SCALAR_FUNCTIONS, TABLE_FUNCTIONS, ENGINES, DICTIONARY_SOURCES)
# Names whose call must be visible in the parse tree (checked there) wherever they appear.
DANGEROUS_CALLS = frozenset(name for name, access in _ANY_CALL.items() if access.kind != LOCAL)

# Settings a statement or URL must not change, with why.
_SQL_IN_STRING = "runs SQL given as a string, which the server cannot check"
_NAMES_A_FILE = "names a file on the server, outside the paths the server checks"
REFUSED_SETTINGS: dict[str, str] = {
    "additional_table_filters": _SQL_IN_STRING,
    "additional_result_filter": _SQL_IN_STRING,
    "filter": _SQL_IN_STRING,
    "parallel_replicas_custom_key": _SQL_IN_STRING,
    "format_schema_source": "can run SQL given as a string, which the server cannot check",
    "format_schema": _NAMES_A_FILE,
    "format_template_resultset": _NAMES_A_FILE,
    "format_template_row": _NAMES_A_FILE,
    "output_format_schema": _NAMES_A_FILE,
    "input_format_record_errors_file_path": _NAMES_A_FILE,
    "rename_files_after_processing": "renames files on the server after reading them",
}
# Settings allowed only with these values (compared in lower case); a statement's SETTINGS
# values are not visible to the guard, so there they are refused whatever the value.
_LOCAL_TABLE_ENGINES = frozenset(n.lower() for n, a in ENGINES.items() if a.kind == LOCAL)
VALUE_CHECKED_SETTINGS: dict[str, tuple[frozenset[str], str]] = {
    "dialect": (frozenset({"clickhouse"}), "only the ClickHouse SQL dialect can be checked by the server"),
    "default_table_engine": (_LOCAL_TABLE_ENGINES, "tables created without ENGINE must use a local engine"),
    "default_temporary_table_engine": (_LOCAL_TABLE_ENGINES, "tables created without ENGINE must use a local engine"),
    "default_database_engine": (
        frozenset({"atomic", "ordinary", "memory"}),
        "databases created without ENGINE must use a local engine",
    ),
}
EXTERNAL_SETTINGS: dict[str, str] = {"format_avro_schema_registry_url": "fetches Avro schemas from a registry"}

# ---- statement kinds ------------------------------------------------------------------------

READ_KINDS = frozenset(
    {
        "SelectWithUnionQuery",
        "SelectIntersectExceptQuery",
        "SelectQuery",
        "Explain",
        "CheckQuery",
        "CheckGrantQuery",
        "Set",  # readonly=2: settings may change
        "UseQuery",
    }
)
_READ_PREFIXES = ("Show", "Exists", "Describe")
WRITE_KINDS = frozenset(
    {
        "CreateQuery",
        "AttachQuery",
        "AlterQuery",
        "DropQuery",
        "DetachQuery",
        "UndropQuery",
        "InsertQuery",
        "Rename",
        "TruncateQuery",
        "OptimizeQuery",
        "DeleteQuery",
        "UpdateQuery",
        "KillQueryQuery",
        "CreateSQLFunctionQuery",
        "DropFunctionQuery",
        "CreateIndexQuery",
        "DropIndexQuery",
        "CreateNamedCollectionQuery",
        "AlterNamedCollectionQuery",
        "DropNamedCollectionQuery",
        "ASTTransactionControl",
    }
)
_ACCESS_KINDS = frozenset(
    {
        "CreateUserQuery",
        "CreateRoleQuery",
        "CreateQuotaQuery",
        "CreateSettingsProfileQuery",
        "GrantQuery",
        "SetRoleQuery",
        "ExecuteAsQuery",
    }
)
_FORBIDDEN_KINDS = {
    "BackupQuery": "BACKUP writes backups to paths or URLs of its own",
    "RestoreQuery": "RESTORE reads backups from paths or URLs of its own",
}
# SYSTEM commands that only flush, drop caches, reload dictionaries/functions or control
# background work. SHUTDOWN, KILL, failpoints, replica surgery and the rest are refused.
_ALLOWED_SYSTEM = re.compile(
    r"SYSTEM (?:"
    r"FLUSH (?:LOGS|ASYNC INSERT QUEUE|DISTRIBUTED)"
    r"|(?:DROP|CLEAR) (?:[A-Z_]+ )*CACHES?"
    r"|RELOAD (?:DICTIONARY|DICTIONARIES|EMBEDDED DICTIONARIES|FUNCTIONS?|ASYNCHRONOUS METRICS)"
    r"|(?:STOP|START) (?:MERGES|TTL MERGES|MOVES|FETCHES|SENDS|REPLICATED SENDS|DISTRIBUTED SENDS"
    r"|REPLICATION QUEUES|VIEWS|VIEW|REPLICATED VIEW|CLEANUP|PULLING REPLICATION LOG)"
    r"|SYNC (?:REPLICA|DATABASE REPLICA|TRANSACTION LOG)"
    r"|WAIT LOADING PARTS|WAIT VIEW|REFRESH VIEW|CANCEL VIEW|TEST VIEW|UNFREEZE"
    r"|(?:LOAD|UNLOAD) PRIMARY KEY|PREWARM (?:MARK|PRIMARY INDEX) CACHE"
    r")(?: |$)"
)

READONLY_MESSAGE = (
    "Cannot execute query in readonly mode. For queries over HTTP, method GET implies readonly. "
    "You should use method POST for modifying queries"
)
EXTERNAL_HINT = "the embedded server allows it only when started with --allow-external-access"


def access_denied(message: str) -> ClickHouseError:
    return ClickHouseError(497, message, "ACCESS_DENIED")


# ---- the AST dump ---------------------------------------------------------------------------


class AstFormatError(ValueError):
    """The EXPLAIN AST dump is not a well-formed tree (e.g. an identifier with a line break)."""


@dataclass
class AstNode:
    label: str  # the line without indentation and "(children N)", e.g. "Function file", "Literal 'x'"
    children: list[AstNode] = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.label.split(" ", 1)[0]

    @property
    def name(self) -> str:
        """The second word: a function's name, a FunctionWithKeyValueArguments source."""
        parts = self.label.split()
        return parts[1] if len(parts) > 1 else ""

    def walk(self) -> Iterator[tuple[AstNode, AstNode | None]]:
        """Every node with its parent, depth first."""
        stack: list[tuple[AstNode, AstNode | None]] = [(self, None)]
        while stack:
            node, parent = stack.pop()
            yield node, parent
            stack.extend((child, node) for child in reversed(node.children))


_DUMP_LINE = re.compile(r"^( *)(.*?)(?: \(children (\d+)\))?$")


def parse_ast_dump(text: str) -> AstNode:
    """Parse `EXPLAIN AST` output; every node's "(children N)" must match what follows it.

    Identifiers are printed unescaped, so one holding a line break would add lines; the
    strict count check turns such a dump into an error instead of a misread tree.
    """
    lines = text.rstrip("\n").split("\n")  # not splitlines(): \x0b and friends are no line breaks here
    stack: list[tuple[AstNode, int, int]] = []  # node, depth, claimed children
    root: AstNode | None = None
    for line in lines:
        match = _DUMP_LINE.match(line)
        assert match is not None  # the pattern matches any line
        depth, label, claimed = len(match.group(1)), match.group(2).rstrip(), int(match.group(3) or 0)
        if not label:
            raise AstFormatError("empty line in the AST dump")
        node = AstNode(label)
        while stack and stack[-1][1] >= depth:
            _close(stack.pop())
        if root is None:
            if depth != 0:
                raise AstFormatError("the AST dump does not start at its root")
            root = node
        elif not stack or stack[-1][1] != depth - 1:
            raise AstFormatError(f"unexpected indentation at {label!r}")
        else:
            stack[-1][0].children.append(node)
        stack.append((node, depth, claimed))
    while stack:
        _close(stack.pop())
    if root is None:
        raise AstFormatError("empty AST dump")
    return root


def _close(entry: tuple[AstNode, int, int]) -> None:
    node, _, claimed = entry
    if len(node.children) != claimed:
        raise AstFormatError(f"{node.label!r} claims {claimed} children and has {len(node.children)}")


_ESCAPES = {"\\": "\\", "'": "'", "n": "\n", "t": "\t", "r": "\r", "0": "\0", "b": "\b", "f": "\f", "a": "\a"}


def string_literal(node: AstNode) -> str | None:
    """The value of a `Literal '...'` node (possibly followed by an alias), else None."""
    if node.kind != "Literal":
        return None
    text = node.label[len("Literal ") :]
    if not text.startswith("'"):
        return None
    out: list[str] = []
    i = 1
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            escaped = _ESCAPES.get(text[i + 1])
            if escaped is None:
                return None  # an escape the dump should not produce: treat as not a plain string
            out.append(escaped)
            i += 2
        elif char == "'":
            return "".join(out)
        else:
            out.append(char)
            i += 1
    return None


def _arguments(node: AstNode) -> list[AstNode]:
    if node.children and node.children[0].kind == "ExpressionList":
        return node.children[0].children
    return []


# ---- paths ------------------------------------------------------------------------------------

# clickhouse-local reads and writes the process's own streams for these names.
_STREAM_NAMES = frozenset({"stdin", "stdout", "stderr", "-"})
_NUMERIC_RANGE = re.compile(r"\{\d+\.\.\d+\}")
_BRACES = re.compile(r"\{([^{}]*)\}")
_GLOB_CHARS = re.compile(r"[*?{]")


@dataclass(frozen=True)
class GuardPolicy:
    user_files: Path
    # True when the server process's working directory is user_files (relative paths resolve there).
    relative_paths: bool = True
    allow_external_access: bool = False

    @property
    def roots(self) -> tuple[str, ...]:
        given = str(self.user_files).rstrip("/") or "/"
        real = os.path.realpath(given)
        return (given,) if real == given else (given, real)


def path_refusal(path: str, policy: GuardPolicy) -> str | None:
    """Why a file path must not be used, or None when it stays inside user_files_path."""
    root = policy.roots[0]
    if any(ord(char) < 32 for char in path):
        return "the path contains control characters"
    if path.strip() in _STREAM_NAMES:
        return "it names a standard stream of the server process"
    if "{" in _BRACES.sub("", path) or "}" in _BRACES.sub("", path):
        return "nested or unbalanced {} in the path"
    for alternatives in _BRACES.findall(path):
        if "/" in alternatives:
            return "a {...} glob alternative must not contain '/'"
    if ".." in _NUMERIC_RANGE.sub("", path):
        return "'..' is not allowed in paths"
    if path.startswith("/"):
        inside = next((r for r in policy.roots if path == r or path.startswith(r + "/")), None)
        if inside is None:
            return f"path is outside user_files_path {root}"
        relative = path[len(inside) + 1 :]
    elif not policy.relative_paths:
        return (
            f"relative paths resolve against the process's working directory, which is not user_files_path here; "
            f"use an absolute path under {root}"
        )
    else:
        relative = path
    # A symbolic link inside user_files_path must not lead out of it (ClickHouse checks the same).
    fixed = relative[: m.start()] if (m := _GLOB_CHARS.search(relative)) else relative
    real = os.path.realpath(os.path.join(policy.roots[-1], fixed))
    real_root = policy.roots[-1]
    if real != real_root and not real.startswith(real_root.rstrip("/") + "/"):
        return f"path leads outside user_files_path {root} through a symbolic link"
    return None


# ---- the normalized text --------------------------------------------------------------------

_CALL = re.compile(r'(?:`((?:[^`\\]|\\.)*)`|"((?:[^"\\]|\\.)*)"|\b([A-Za-z_][A-Za-z0-9_]*))\s*\(')
_ASSIGNMENT = re.compile(r'(?:`([^`]*)`|"([^"]*)"|\b([A-Za-z_][A-Za-z0-9_]*))\s*=(?!=)')
_WORDS = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SETTINGS_KEYWORD = re.compile(r"\b(?:SETTINGS|SETTING|SET)\b", re.IGNORECASE)
_INTO_OUTFILE = re.compile(r"\bINTO\s+OUTFILE\b", re.IGNORECASE)
_FROM_INFILE = re.compile(r"\bFROM\s+INFILE\b", re.IGNORECASE)
_FROM_LITERAL = re.compile(r"\bFROM\s+\?", re.IGNORECASE)
_DICT_LAYOUT = re.compile(r"\bLAYOUT\s*\(\s*([A-Za-z_]+)", re.IGNORECASE)
_CLICKHOUSE_SOURCE = re.compile(r"\bSOURCE\s*\(\s*CLICKHOUSE\s*\(([^()]*)\)\s*\)", re.IGNORECASE)
_PLACEHOLDER = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:")
_IDENTIFIER_PARAM = re.compile(r"\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*:\s*Identifier\s*\}")
# Left in normalized text (literals are `?` there), a line break or backslash is inside a quoted
# identifier, where it would add lines to the AST dump.
_BROKEN_IDENTIFIER = re.compile(r"[\n\\]")
_IDENTIFIER_MESSAGE = "identifiers with line breaks or backslashes are not accepted by the embedded server"


def strip_trailing_semicolons(sql: str) -> str:
    text = sql.rstrip()
    while text.endswith(";"):
        text = text[:-1].rstrip()
    return text


def has_inner_semicolon(sql: str) -> bool:
    """The cheap pre-filter: a `;` anywhere but at the end (it may still sit in a string)."""
    return ";" in strip_trailing_semicolons(sql)


_HIDING_WORDS = re.compile(
    "|".join(
        re.escape(word) for word in sorted(DANGEROUS_CALLS | {"outfile", "infile", "apply"}, key=len, reverse=True)
    ),
    re.IGNORECASE,
)
# `CREATE TABLE url (`, `INSERT INTO db.file (`: a table name before its column list, not a call.
_NAME_BEFORE = re.compile(r"(?:\.|\b(?:TABLE|INTO|VIEW|DICTIONARY|DATABASE|EXISTS))\s*$", re.IGNORECASE)


def calls_in(normalized: str) -> Counter[str]:
    """Calls `name(` of non-local functions in normalized text, by lower-case name."""
    counts: Counter[str] = Counter()
    for match in _CALL.finditer(normalized):
        name = next(group for group in match.groups() if group is not None).lower()
        if name in DANGEROUS_CALLS and not _NAME_BEFORE.search(normalized, 0, match.start()):
            counts[name] += 1
    return counts


def setting_names_in(normalized: str) -> set[str]:
    """Names assigned after the first SET/SETTINGS/SETTING keyword (values are `?` there)."""
    keyword = _SETTINGS_KEYWORD.search(normalized)
    if keyword is None:
        return set()
    return {
        next(group for group in match.groups() if group is not None).lower()
        for match in _ASSIGNMENT.finditer(normalized, keyword.end())
    }


def setting_refusal(name: str, value: str | None, allow_external: bool) -> str | None:
    """Why a setting may not be set to this value (None: the value is not known), or None."""
    name = name.lower()
    if name in REFUSED_SETTINGS:
        return REFUSED_SETTINGS[name]
    if name in VALUE_CHECKED_SETTINGS:
        allowed, why = VALUE_CHECKED_SETTINGS[name]
        if value is None:
            return f"{why}; set it as a URL parameter, where its value can be checked"
        if value.strip().strip("'").lower() not in allowed:
            return why
    if name in EXTERNAL_SETTINGS and not allow_external:
        return f"{EXTERNAL_SETTINGS[name]}; {EXTERNAL_HINT}"
    return None


# ---- the engine side ------------------------------------------------------------------------


class GuardEngine(Protocol):
    """The three helper queries, run by the server on the request's own chDB handle."""

    def explain_ast(self, sql: str, params: Mapping[str, str]) -> str: ...

    def normalize(self, sql: str) -> str: ...

    def format_single_line(self, sql: str) -> str: ...


@dataclass(frozen=True)
class Verdict:
    kind: str  # the root node's label, e.g. "SelectWithUnionQuery", "SYSTEM query"
    writes: bool
    refusal: tuple[int, str, str] | None = None  # code, message, name (a fresh exception per raise)

    def error(self) -> ClickHouseError | None:
        return ClickHouseError(*self.refusal) if self.refusal else None


class _Refused(Exception):
    def __init__(self, error: ClickHouseError):
        self.error = error


@dataclass
class GuardStats:
    checks: int = 0
    hits: int = 0
    misses: int = 0
    refused: int = 0
    miss_seconds: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {
            "checks": self.checks,
            "cache_hits": self.hits,
            "cache_misses": self.misses,
            "refused": self.refused,
            "hit_rate": round(self.hits / self.checks, 4) if self.checks else 0.0,
            "mean_miss_ms": round(1000 * self.miss_seconds / self.misses, 3) if self.misses else 0.0,
        }


class StatementGuard:
    """Decides whether a statement may run; refusals are raised as ClickHouseError."""

    def __init__(self, policy: GuardPolicy, cache_size: int = 4096):
        self.policy = policy
        self._cache: OrderedDict[bytes, Verdict] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self.stats = GuardStats()

    def check(
        self,
        engine: GuardEngine,
        sql: str,
        params: Mapping[str, str],
        *,
        readonly: bool = False,
        insert_head: bool = False,
    ) -> Verdict:
        """Raise the refusal for `sql`, or return its verdict.

        `insert_head`: the statement is an INSERT whose data streams separately (body data
        never reaches the parser as SQL); otherwise an INSERT must carry no inline data.
        """
        key = self._key(sql, params, insert_head)
        # A placeholder the request does not bind takes its value from the session (`SET param_x`),
        # which the key does not know: such statements are decided every time, on that session.
        cacheable = all(name in params for name in _PLACEHOLDER.findall(sql))
        with self._lock:
            self.stats.checks += 1
            verdict = self._cache.get(key) if cacheable else None
            if verdict is not None:
                self._cache.move_to_end(key)
                self.stats.hits += 1
        if verdict is None:
            started = time.perf_counter()
            verdict = self._decide(engine, sql, params, insert_head)  # engine errors propagate uncached
            with self._lock:
                self.stats.misses += 1
                self.stats.miss_seconds += time.perf_counter() - started
                if cacheable:
                    self._cache[key] = verdict
                    if len(self._cache) > self._cache_size:
                        self._cache.popitem(last=False)
        error = verdict.error()
        if error is None and readonly and verdict.writes:
            error = ClickHouseError(164, READONLY_MESSAGE, "READONLY")
        if error is not None:
            with self._lock:
                self.stats.refused += 1
            raise error
        return verdict

    def check_url_settings(self, settings: Mapping[str, str]) -> None:
        for name, value in settings.items():
            reason = setting_refusal(name, value, self.policy.allow_external_access)
            if reason:
                raise access_denied(f"setting {name}: {reason}")

    @staticmethod
    def _key(sql: str, params: Mapping[str, str], insert_head: bool) -> bytes:
        digest = hashlib.blake2b(sql.encode(), digest_size=20)
        digest.update(b"\0head" if insert_head else b"\0stmt")
        for name in sorted(params):
            digest.update(b"\0" + name.encode() + b"\0" + params[name].encode())
        return digest.digest()

    # ---- deciding ---------------------------------------------------------------------------

    def _decide(self, engine: GuardEngine, sql: str, params: Mapping[str, str], insert_head: bool) -> Verdict:
        normalized: str | None = None
        if has_inner_semicolon(sql):
            # Before EXPLAIN AST: chDB would run the statements after the first one.
            normalized = _normalized(engine, sql)
            if has_inner_semicolon(normalized):
                return Verdict("", False, (62, "Multi-statements are not allowed", "SYNTAX_ERROR"))
        refusal = _identifier_param_refusal(sql, params)
        if refusal:
            return Verdict("", False, (497, refusal, "ACCESS_DENIED"))
        try:
            root = parse_ast_dump(engine.explain_ast(sql, params))
        except AstFormatError as exc:
            if ("`" in sql or '"' in sql) and _BROKEN_IDENTIFIER.search(normalized or _normalized(engine, sql)):
                return Verdict("", False, (497, _IDENTIFIER_MESSAGE, "ACCESS_DENIED"))
            return Verdict(
                "",
                False,
                (497, f"The embedded server could not analyse this statement ({exc}); it was not run", "ACCESS_DENIED"),
            )
        kind = root.label
        writes = not _is_read(kind)
        try:
            _check_kind(root)
            walk = _Walk(self.policy, root, sql)
            walk.run()
            # Dumps hide parts of many statements (SETTINGS values, SHOW ... WHERE, APPLY's function),
            # so calls are also counted in the text, unless the text provably hides nothing.
            if normalized is None and _needs_normalized(sql, root, walk):
                normalized = _normalized(engine, sql)
            if normalized is not None:
                walk.check_normalized(normalized)
            self._check_details(engine, root, sql, normalized, insert_head)
        except _Refused as refused:
            error = refused.error
            return Verdict(kind, writes, (error.code, error.message, error.name))
        return Verdict(kind, writes)

    def _check_details(
        self, engine: GuardEngine, root: AstNode, sql: str, normalized: str | None, insert_head: bool
    ) -> None:
        """What only the statement's text tells: SYSTEM's command, ATTACH's FROM, an INSERT's data."""
        kind, first = root.label, root.kind
        if kind == "SYSTEM query":
            command = engine.format_single_line(sql).strip()
            if not _ALLOWED_SYSTEM.match(command.upper()):
                words = " ".join(command.split()[:3])
                raise _Refused(
                    access_denied(
                        f"{words} is not allowed by the embedded server: it stops or changes the server process "
                        "(allowed: SYSTEM FLUSH, DROP/CLEAR ... CACHE, RELOAD DICTIONARY, START/STOP MERGES, "
                        "SYNC REPLICA and the like)"
                    )
                )
            return
        if first == "AttachQuery" and normalized is not None and _FROM_LITERAL.search(normalized):
            raise _Refused(access_denied("ATTACH ... FROM '<path>' reads table data from a path on the server"))
        if (
            first == "InsertQuery"
            and not insert_head
            and not any(child.kind == "SelectWithUnionQuery" for child in root.children)
        ):
            raise _Refused(
                access_denied(
                    "an INSERT with inline data must be sent as INSERT ... VALUES or INSERT ... FORMAT at the start "
                    "of the request (the embedded server could not separate its data)"
                )
            )


def _check_kind(root: AstNode) -> None:
    """Statement kinds that are never run, whatever they contain."""
    kind, first = root.label, root.kind
    if first in _FORBIDDEN_KINDS:
        raise _Refused(access_denied(f"{_FORBIDDEN_KINDS[first]}; it is never allowed by the embedded server"))
    if first in _ACCESS_KINDS or _is_access_label(kind):
        raise _Refused(
            access_denied(
                "access management (users, roles, grants, quotas, row policies, settings profiles) is not "
                "supported by the embedded server: it has one user, set by its options"
            )
        )
    if not _is_read(kind) and first not in WRITE_KINDS and kind != "SYSTEM query":
        raise _Refused(access_denied(f"statement kind {first} is not supported by the embedded server"))


def _normalized(engine: GuardEngine, sql: str) -> str:
    """normalizeQueryKeepNames without the result row's line terminator."""
    text = engine.normalize(sql)
    return text[:-1] if text.endswith("\n") else text


def _is_read(kind: str) -> bool:
    first = kind.split(" ", 1)[0]
    return first in READ_KINDS or first.startswith(_READ_PREFIXES) or kind.startswith("SHOW ")


def _is_access_label(kind: str) -> bool:
    """`DROP USER query`, `CREATE ROW POLICY or ALTER ROW POLICY query`, `MOVE USER query`, ..."""
    first = kind.split(" ", 1)[0]
    return kind.endswith(" query") and first.isupper() and first not in ("SYSTEM", "SHOW")


def _identifier_param_refusal(sql: str, params: Mapping[str, str]) -> str | None:
    for name in _IDENTIFIER_PARAM.findall(sql):
        value = params.get(name, "")
        if any(char in value for char in "\n\r\\"):
            return f"query parameter {name} (an Identifier) must not contain line breaks or backslashes"
    return None


def _needs_normalized(sql: str, root: AstNode, walk: _Walk) -> bool:
    """Whether the normalized text is needed; False saves a round trip for most reads.

    Without backslashes nothing in the text is escaped, so a dangerous name, `outfile`,
    `infile` or `apply` that appears nowhere in it (not even inside a longer word) cannot
    be hidden in any part of the statement; without a line break no quoted identifier can
    break the dump's lines. What the tree itself flags needs the text in any case.
    """
    return (
        "\\" in sql
        or (("`" in sql or '"' in sql) and "\n" in sql)
        or _HIDING_WORDS.search(sql) is not None
        or walk.has_set
        or walk.has_dictionary
        or root.kind == "AttachQuery"
    )


class _Walk:
    """One pass over the tree: classify every call, count them, note what needs the text."""

    _TABLE_PARENTS = frozenset({"TableExpression", "InsertQuery", "CreateQuery", "AttachQuery"})

    def __init__(self, policy: GuardPolicy, root: AstNode, sql: str):
        self.policy = policy
        self.root = root
        self.sql = sql
        self.calls: Counter[str] = Counter()
        self.has_set = False
        self.has_dictionary = False
        self.has_apply = False
        self.clickhouse_sources = 0

    def run(self) -> None:
        for node, parent in self.root.walk():
            kind = node.kind
            if kind == "Set":
                self.has_set = True
            elif kind == "Function":
                self._function(node, parent)
            elif kind == "FunctionWithKeyValueArguments":
                self._key_value_function(node, parent)
            elif kind == "Dictionary" and node.label.startswith("Dictionary definition"):
                self.has_dictionary = True
            elif kind == "ColumnsApplyTransformer":
                self.has_apply = True  # `* APPLY(file)` names a function without calling it in the text
            elif kind == "Literal" and parent is not None:
                self._literal(node, parent)

    def _literal(self, node: AstNode, parent: AstNode) -> None:
        # A literal directly under a SELECT's union node is INTO OUTFILE; under INSERT, FROM INFILE.
        if parent.kind == "SelectWithUnionQuery":
            raise _Refused(access_denied("INTO OUTFILE writes a file on the server; results come in the response"))
        if parent.kind == "InsertQuery":
            raise _Refused(access_denied("INSERT ... FROM INFILE reads a file on the server; send the data instead"))

    def _function(self, node: AstNode, parent: AstNode | None) -> None:
        name = node.name
        if node.children:  # written with parentheses, as the text's `name(` is (`ENGINE = Memory` is not)
            self.calls[name.lower()] += 1
        parent_kind = parent.kind if parent is not None else ""
        if self._is_engine(node, parent):
            self._apply(node, f"ENGINE = {name}", _lookup(ENGINES, name), "engine")
            return
        if parent_kind in self._TABLE_PARENTS:
            self._apply(node, f"{name}(...)", _lookup(TABLE_FUNCTIONS, name), "table function")
            return
        access = _ANY_CALL.get(name.lower())
        if access is not None and access.kind != LOCAL:
            self._apply(node, f"{name}(...)", access, "function")

    def _is_engine(self, node: AstNode, parent: AstNode | None) -> bool:
        """The engine is the first child of a storage definition, when the statement names one
        (without ENGINE the first child may be ORDER BY's tuple())."""
        return (
            parent is not None
            and parent.label.startswith("Storage definition")
            and parent.children[0] is node
            and re.search(r"\bENGINE\b", self.sql, re.IGNORECASE) is not None
        )

    def _key_value_function(self, node: AstNode, parent: AstNode | None) -> None:
        name = node.name.lower()
        self.calls[name] += 1
        if parent is None or not parent.label.startswith("Dictionary definition"):
            return
        access = DICTIONARY_SOURCES.get(name)
        if name == "clickhouse":
            self.clickhouse_sources += 1
        self._apply(node, f"SOURCE({name.upper()}(...))", access, "dictionary source")

    def _apply(self, node: AstNode, what: str, access: Access | None, noun: str) -> None:
        if access is None:
            raise _Refused(access_denied(f"{what}: {noun} {node.name} is not known to the embedded server to be local"))
        if access.kind == LOCAL:
            return
        if access.kind == FORBIDDEN:
            raise _Refused(access_denied(f"{what}: {noun} {node.name} {access.reason}; it is never allowed"))
        if access.kind == EXTERNAL:
            if not self.policy.allow_external_access:
                raise _Refused(access_denied(f"{what}: {noun} {node.name} {access.reason}; {EXTERNAL_HINT}"))
            return
        self._file(node, access)

    def _file(self, node: AstNode, access: Access) -> None:
        arguments = _arguments(node)
        assert access.path_arg is not None
        if len(arguments) <= access.path_arg:
            if access.path_optional:
                return
            raise _Refused(access_denied(f"{node.name}(...): a path under user_files_path is required"))
        path = string_literal(arguments[access.path_arg])
        if path is None:
            raise _Refused(
                access_denied(
                    f"{node.name}(...): the path must be a string literal (not an expression, identifier or named "
                    "collection) so the server can check it stays inside user_files_path"
                )
            )
        reason = path_refusal(path, self.policy)
        if reason:
            raise _Refused(access_denied(f"{node.name}('{path}'): {reason}"))

    def check_normalized(self, normalized: str) -> None:
        """Checks on ClickHouse's lexed text (literals are `?`, comments gone)."""
        if _BROKEN_IDENTIFIER.search(normalized):
            raise _Refused(access_denied(_IDENTIFIER_MESSAGE))
        if _INTO_OUTFILE.search(normalized):
            raise _Refused(access_denied("INTO OUTFILE writes a file on the server; results come in the response"))
        if _FROM_INFILE.search(normalized):
            raise _Refused(access_denied("INSERT ... FROM INFILE reads a file on the server; send the data instead"))
        if self.has_apply:
            named = {word.lower() for word in _WORDS.findall(normalized)} & DANGEROUS_CALLS
            if named:
                raise _Refused(
                    access_denied(
                        f"APPLY with {', '.join(sorted(named))}: a column transformer's function is not in the parse "
                        "tree the server checks"
                    )
                )
        for name, count in calls_in(normalized).items():
            if count > self.calls[name]:
                access = _ANY_CALL[name]
                raise _Refused(
                    access_denied(
                        f"{name}(...) appears where the server cannot check it (a SETTINGS value or a dictionary "
                        f"clause): it {access.reason or 'reads files on the server'}"
                    )
                )
        if self.has_set:
            for name in sorted(setting_names_in(normalized)):
                reason = setting_refusal(name, None, self.policy.allow_external_access)
                if reason:
                    raise _Refused(access_denied(f"setting {name}: {reason}"))
        if self.has_dictionary:
            self._dictionary(normalized)

    def _dictionary(self, normalized: str) -> None:
        layout = _DICT_LAYOUT.search(normalized)
        if layout and "SSD" in layout.group(1).upper():
            raise _Refused(access_denied(f"LAYOUT({layout.group(1)}) writes a cache file at a path on the server"))
        if not self.clickhouse_sources:
            return
        source = _CLICKHOUSE_SOURCE.search(normalized)
        tokens = source.group(1).split() if source else []
        if source is None or len(tokens) % 2 or any(value != "?" for value in tokens[1::2]):
            raise _Refused(access_denied("SOURCE(CLICKHOUSE(...)): only `key 'literal'` pairs can be checked"))
        keys = {key.lower() for key in tokens[0::2]}
        if keys & _SQL_STRING_SOURCE_KEYS:
            raise _Refused(
                access_denied(
                    f"SOURCE(CLICKHOUSE({', '.join(sorted(keys & _SQL_STRING_SOURCE_KEYS))} ...)): {_SQL_IN_STRING}; "
                    "use table (and a view for filtering)"
                )
            )
        remote = keys - _LOCAL_CLICKHOUSE_SOURCE_KEYS
        if remote and not self.policy.allow_external_access:
            raise _Refused(
                access_denied(f"SOURCE(CLICKHOUSE({', '.join(sorted(remote))} ...)) {_NETWORK}; {EXTERNAL_HINT}")
            )


def _lookup(table: Mapping[str, Access], name: str) -> Access | None:
    if name in table:
        return table[name]
    lowered = {key.lower(): value for key, value in table.items()}
    return lowered.get(name.lower())


# ---- helpers for the server -----------------------------------------------------------------


def quote_string(text: str) -> str:
    """`text` as a ClickHouse string literal.

    The helper queries embed the statement this way rather than as a query parameter: chDB's
    `query(params=...)` replaces the session's own `SET param_*` values.
    """
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\0", "\\0") + "'"


_POSITION = re.compile(r"\bposition (\d+)")


def shift_error_positions(message: str, offset: int) -> str:
    """Syntax errors of `EXPLAIN AST <sql>` count from the prefix; report positions in `sql`."""
    return _POSITION.sub(lambda m: f"position {max(int(m.group(1)) - offset, 0)}", message)
