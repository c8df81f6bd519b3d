"""Pure helpers for the ClickHouse HTTP interface: statement shapes, formats, errors, bodies.

Nothing here touches chDB or sockets, so all of it is unit-tested directly.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from email.parser import BytesParser
from email.policy import HTTP
from typing import Any

# URL parameters the HTTP layer consumes itself; everything else that is not a
# `param_*` query parameter is applied as a ClickHouse setting for the request.
TRANSPORT_PARAMS = frozenset(
    {
        "query",
        "database",
        "default_format",
        "session_id",
        "session_timeout",
        "session_check",
        "query_id",
        "quota_key",
        "compress",
        "decompress",
        "buffer_size",
        "wait_end_of_query",
        "client_protocol_version",
        "role",
        "user",
        "password",
        "enable_http_compression",
        "send_progress_in_http_headers",
        "http_headers_progress_interval_ms",
        "http_zlib_compression_level",
        "http_native_compression_disable_checksumming_on_decompress",
        "stacktrace",
    }
)

# Formats whose per-block encodings concatenate into one valid stream. chDB encodes
# each block on its own, so formats with a global header or footer (JSON, Pretty,
# *WithNames, Parquet, Arrow) are produced in one piece instead.
STREAMABLE_FORMATS = frozenset(
    {
        "Native",
        "TabSeparated",
        "TSV",
        "TabSeparatedRaw",
        "TSVRaw",
        "CSV",
        "RowBinary",
        "JSONEachRow",
        "JSONCompactEachRow",
        "JSONStringsEachRow",
        "JSONLines",
        "NDJSON",
        "LineAsString",
        "Values",
    }
)

# Leading keywords of statements that return a result set (and so get X-ClickHouse-Format).
_RESULT_KEYWORDS = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXISTS", "EXPLAIN", "CHECK", "("})

_COMMENT_OR_SPACE = re.compile(rb"(?:\s+|--[^\n]*(?:\n|$)|/\*.*?\*/)*", re.DOTALL)
_KEYWORD = re.compile(rb"\(|[A-Za-z]+")
_TRAILING_FORMAT = re.compile(
    r"\bFORMAT\s+([A-Za-z][A-Za-z0-9_]*)(?:\s+SETTINGS\s+[^;]*?)?\s*;?\s*$", re.IGNORECASE | re.DOTALL
)
# An INSERT head ends at its FORMAT clause; the data starts after the format name,
# its trailing blanks and at most one line break.
_INSERT_FORMAT = re.compile(rb"\bFORMAT[ \t\r\n]+([A-Za-z][A-Za-z0-9_]*)[ \t]*(?:\r?\n)?", re.IGNORECASE)
_INSERT_VALUES = re.compile(rb"\bVALUES\b", re.IGNORECASE)
_ERROR_CODE = re.compile(r"Code:\s*(\d+)")
_ERROR_NAME = re.compile(r"\(([A-Z][A-Z0-9_]+)\)(?:\s*\(version [^)]*\))?\s*$")

# ClickHouse's own mapping from exception code to HTTP status, for the codes clients meet.
_STATUS_BY_CODE = {
    36: 400,  # BAD_ARGUMENTS
    62: 400,  # SYNTAX_ERROR
    27: 400,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
    6: 400,  # CANNOT_PARSE_TEXT
    26: 400,  # CANNOT_PARSE_QUOTED_STRING
    32: 400,  # ATTEMPT_TO_READ_AFTER_EOF
    33: 400,  # CANNOT_READ_ALL_DATA
    38: 400,  # CANNOT_PARSE_DATE
    41: 400,  # CANNOT_PARSE_DATETIME
    72: 400,  # CANNOT_PARSE_NUMBER
    73: 400,  # UNKNOWN_FORMAT
    115: 400,  # UNKNOWN_SETTING
    456: 400,  # UNKNOWN_QUERY_PARAMETER
    457: 400,  # BAD_QUERY_PARAMETER
    47: 404,  # UNKNOWN_IDENTIFIER
    46: 404,  # UNKNOWN_FUNCTION
    60: 404,  # UNKNOWN_TABLE
    81: 404,  # UNKNOWN_DATABASE
    516: 401,  # AUTHENTICATION_FAILED
    497: 403,  # ACCESS_DENIED
    291: 403,  # DATABASE_ACCESS_DENIED
    164: 403,  # READONLY
    209: 408,  # SOCKET_TIMEOUT
    202: 503,  # TOO_MANY_SIMULTANEOUS_QUERIES
    373: 423,  # SESSION_IS_LOCKED
    372: 404,  # SESSION_NOT_FOUND
    48: 501,  # NOT_IMPLEMENTED
}

ERROR_NAMES = {
    1: "UNSUPPORTED_METHOD",
    36: "BAD_ARGUMENTS",
    48: "NOT_IMPLEMENTED",
    62: "SYNTAX_ERROR",
    372: "SESSION_NOT_FOUND",
    373: "SESSION_IS_LOCKED",
    516: "AUTHENTICATION_FAILED",
    1000: "POCO_EXCEPTION",
    1001: "STD_EXCEPTION",
}


class ClickHouseError(Exception):
    """An error answered the way ClickHouse answers it: a code, a name and a message."""

    def __init__(self, code: int, message: str, name: str | None = None, *, verbatim: str | None = None):
        self.code = code
        self.name = name or ERROR_NAMES.get(code, "UNKNOWN_EXCEPTION")
        self.message = message
        # chDB's errors already read `Code: N. DB::Exception: ... (NAME)`; they are sent as they are.
        self._verbatim = verbatim
        super().__init__(self.wire_body().strip())

    @property
    def http_status(self) -> int:
        return _STATUS_BY_CODE.get(self.code, 500)

    def wire_body(self) -> str:
        if self._verbatim:
            return self._verbatim + "\n"
        return f"Code: {self.code}. DB::Exception: {self.message}. ({self.name})\n"

    @classmethod
    def from_engine(cls, text: str) -> ClickHouseError:
        """Wrap an error raised by chDB."""
        text = text.strip()
        start = text.find("Code: ")
        if start > 0:
            text = text[start:]
        code_match = _ERROR_CODE.search(text)
        if code_match is None:
            return cls(1001, text, "STD_EXCEPTION")
        name_match = _ERROR_NAME.search(text)
        return cls(int(code_match.group(1)), text, name_match.group(1) if name_match else None, verbatim=text)


def strip_leading_comments(sql: bytes) -> bytes:
    match = _COMMENT_OR_SPACE.match(sql)
    return sql[match.end() :] if match else sql


def leading_keyword(sql: str | bytes) -> str:
    raw = sql.encode() if isinstance(sql, str) else sql
    match = _KEYWORD.match(strip_leading_comments(raw))
    return match.group(0).decode().upper() if match else ""


# chDB streams only queries proper; SHOW, DESCRIBE, EXISTS and the like are answered whole.
_STREAMABLE_KEYWORDS = frozenset({"SELECT", "WITH", "("})


def streamable_statement(sql: str) -> bool:
    return leading_keyword(sql) in _STREAMABLE_KEYWORDS


def returns_result_set(sql: str) -> bool:
    """Whether ClickHouse would answer this statement with a result set."""
    return leading_keyword(sql) in _RESULT_KEYWORDS or trailing_format(sql) is not None


def trailing_format(sql: str) -> str | None:
    """The format named by a trailing `FORMAT x` clause (optionally followed by SETTINGS)."""
    match = _TRAILING_FORMAT.search(sql)
    return match.group(1) if match else None


def strip_trailing_format(sql: str) -> str:
    match = _TRAILING_FORMAT.search(sql)
    return sql[: match.start()].rstrip() if match else sql


@dataclass(frozen=True)
class InsertHead:
    """The statement part of an INSERT whose data follows in the request body."""

    statement: str  # the INSERT without its FORMAT clause, as chDB's send_insert wants it
    data_format: str
    data_offset: int  # where the data begins in the buffer the head was found in


def split_insert(buffer: bytes) -> InsertHead | None:
    """Find `INSERT ... FORMAT x` at the start of `buffer` and where its data begins.

    Returns None when the buffer is not an INSERT with a FORMAT clause (for example
    `INSERT ... VALUES (...)`, which runs as an ordinary statement).
    """
    body = strip_leading_comments(buffer)
    if leading_keyword(body) != "INSERT":
        return None
    match = _INSERT_FORMAT.search(body)
    if match is None:
        return None
    values = _INSERT_VALUES.search(body, 0, match.start())
    if values is not None:
        return None
    skipped = len(buffer) - len(body)
    statement = body[: match.start()].decode("utf-8", errors="strict").strip()
    return InsertHead(statement, match.group(1).decode(), skipped + match.end())


_WORD = re.compile(rb"[A-Za-z_][A-Za-z0-9_]*")
_HEREDOC = re.compile(rb"\$([A-Za-z0-9_]*)\$")
# Where an INSERT's head ends without inline VALUES data.
_NOT_VALUES = frozenset({b"SELECT", b"WITH", b"FORMAT", b"FROM"})


def _skip_token(body: bytes, i: int) -> int:
    """The index after a string, quoted name, comment or heredoc starting at `i` (else `i`)."""
    char = body[i : i + 1]
    if char in (b"'", b'"', b"`"):
        j = i + 1
        while j < len(body):
            if body[j : j + 1] == b"\\":
                j += 2
            elif body[j : j + 1] == char:
                if body[j + 1 : j + 2] != char:  # a doubled quote is an escaped one
                    return j + 1
                j += 2
            else:
                j += 1
        return len(body)
    if body.startswith(b"--", i) or char == b"#":
        end = body.find(b"\n", i)
        return len(body) if end < 0 else end + 1
    if body.startswith(b"/*", i):
        end = body.find(b"*/", i + 2)
        return len(body) if end < 0 else end + 2
    heredoc = _HEREDOC.match(body, i) if char == b"$" else None
    if heredoc:
        end = body.find(heredoc.group(0), heredoc.end())
        return len(body) if end < 0 else end + len(heredoc.group(0))
    return i


def split_values_insert(buffer: bytes) -> InsertHead | None:
    """Find `INSERT ... VALUES` at the start of `buffer` and where its data begins.

    The server streams the data to the engine's Values parser with expressions disabled, so
    the data never runs as SQL. The split does not have to be perfect to be safe: a wrong one
    leaves a head that does not parse or data that is not valid Values, and the insert fails.
    Returns None for INSERT ... SELECT / FORMAT / FROM INFILE and anything else.
    """
    body = strip_leading_comments(buffer)
    if leading_keyword(body) != "INSERT":
        return None
    depth, i = 0, 0
    while i < len(body):
        skipped_to = _skip_token(body, i)
        if skipped_to != i:
            i = skipped_to
            continue
        char = body[i : i + 1]
        word = _WORD.match(body, i)
        if word:
            if depth == 0 and word.group(0).upper() == b"VALUES":
                statement = body[:i].decode("utf-8", errors="strict").strip()
                return InsertHead(statement, "Values", len(buffer) - len(body) + word.end())
            if depth == 0 and word.group(0).upper() in _NOT_VALUES:
                return None
            i = word.end()
            continue
        depth += 1 if char == b"(" else -1 if char == b")" else 0
        i += 1
    return None


def _write_varuint(value: int, out: bytearray) -> None:
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return


def _write_string(text: str, out: bytearray) -> None:
    data = text.encode()
    _write_varuint(len(data), out)
    out.extend(data)


def native_header_block(columns: Iterable[tuple[str, str]]) -> bytes:
    """A Native block with these columns and zero rows.

    ClickHouse always answers an empty result with such a block so clients learn the
    columns; chDB answers with no bytes at all. Zero rows carry zero bytes of data.
    """
    columns = list(columns)
    out = bytearray()
    _write_varuint(len(columns), out)
    _write_varuint(0, out)
    for name, type_name in columns:
        _write_string(name, out)
        _write_string(type_name, out)
    return bytes(out)


def parse_describe(tsv: bytes) -> list[tuple[str, str]]:
    """Column names and types from `DESCRIBE` output in TabSeparated."""
    columns = []
    for line in tsv.decode().splitlines():
        if line:
            fields = line.split("\t")
            columns.append((unescape_tsv(fields[0]), unescape_tsv(fields[1])))
    return columns


_TSV_ESCAPES = {"t": "\t", "n": "\n", "\\": "\\", "'": "'", "0": "\0", "r": "\r", "b": "\b", "f": "\f"}


def unescape_tsv(field: str) -> str:
    if "\\" not in field:
        return field
    return re.sub(r"\\(.)", lambda m: _TSV_ESCAPES.get(m.group(1), m.group(1)), field)


def _decoder_factory(encoding: str) -> Callable[[], Any] | None:
    if encoding in ("identity", ""):
        return None
    if encoding in ("gzip", "x-gzip"):
        return lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)
    if encoding == "deflate":
        return zlib.decompressobj
    if encoding == "zstd":
        import zstandard

        return lambda: zstandard.ZstdDecompressor().decompressobj()
    if encoding == "lz4":
        import lz4.frame

        return lz4.frame.LZ4FrameDecompressor
    if encoding == "br":
        raise ClickHouseError(
            36, "Content-Encoding 'br' is not supported by the embedded server; use lz4, zstd, gzip or deflate"
        )
    raise ClickHouseError(36, f"Unknown Content-Encoding {encoding!r}; use lz4, zstd, gzip or deflate")


class Decompressor:
    """Incremental decoder for a request body's Content-Encoding.

    Clients compress each block as its own frame, so a body is a run of concatenated
    frames: when one frame ends, a fresh decoder takes the bytes after it.
    """

    def __init__(self, encoding: str | None):
        self.encoding = (encoding or "identity").strip().lower()
        self._factory = _decoder_factory(self.encoding)
        self._decoder = self._factory() if self._factory else None

    def feed(self, chunk: bytes) -> bytes:
        if self._decoder is None:
            return chunk
        out = bytearray()
        while chunk:
            out += self._decoder.decompress(chunk)
            if self._decoder.eof:
                chunk = self._decoder.unused_data
                self._decoder = self._factory()
            else:
                chunk = b""
        return bytes(out)


def decompress_chunks(chunks: Iterable[bytes], encoding: str | None) -> Iterator[bytes]:
    decoder = Decompressor(encoding)
    try:
        for chunk in chunks:
            out = decoder.feed(chunk)
            if out:
                yield out
    except ClickHouseError:
        raise
    except Exception as exc:  # zlib.error, zstd.ZstdError, RuntimeError from lz4
        raise ClickHouseError(
            36, f"Cannot decompress the request body as {decoder.encoding}: {exc}", "CANNOT_DECOMPRESS"
        ) from exc


def parse_multipart(body: bytes, content_type: str) -> dict[str, bytes]:
    """Fields of a multipart/form-data body (clickhouse-connect sends large parameters this way)."""
    message = BytesParser(policy=HTTP).parsebytes(b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body)
    if not message.is_multipart():
        raise ClickHouseError(36, "Malformed multipart/form-data request body")
    fields: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not name:
            continue
        if part.get_param("filename", header="content-disposition"):
            raise ClickHouseError(48, f"External data (file part {name!r}) is not supported by the embedded server")
        fields[str(name)] = part.get_payload(decode=True) or b""
    return fields


def settings_statement(settings: dict[str, str]) -> str:
    """One `SET a = 'x', b = 'y'` statement for per-request settings."""
    parts = []
    for name, value in settings.items():
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise ClickHouseError(115, f"Unknown setting {name!r}: not a valid setting name", "UNKNOWN_SETTING")
        escaped = value.replace("\\", "\\\\").replace("'", "\\'")
        parts.append(f"{name} = '{escaped}'")
    return "SET " + ", ".join(parts)
