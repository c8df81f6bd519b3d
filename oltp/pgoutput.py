"""A parser of PostgreSQL's logical replication protocol messages (pgoutput, protocol version 1).

psycopg 3 does not speak the streaming replication protocol, so eventhouse reads the slot with
SQL (`pg_logical_slot_peek_binary_changes`), which returns each pgoutput message as bytea; this
module decodes them. Format: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
(integers big-endian, strings NUL-terminated, LSNs and timestamps Int64, timestamps in
microseconds since 2000-01-01 UTC). Column values arrive in PostgreSQL's text output format
(binary values only with the `binary` option, which we do not ask for); oltp/debezium.py types them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)

# A tuple column that was not sent: an unchanged TOASTed value (the row's old value still holds).
UNCHANGED_TOAST = object()


class PgOutputError(ValueError):
    """A message that does not follow the pgoutput format."""


@dataclass(frozen=True)
class Column:
    name: str
    type_oid: int
    type_modifier: int
    is_key: bool


@dataclass(frozen=True)
class Begin:
    final_lsn: int  # the LSN of the transaction's commit record
    commit_time: datetime
    xid: int


@dataclass(frozen=True)
class Commit:
    flags: int
    commit_lsn: int
    end_lsn: int  # the end of the commit record: where a slot advances to once this is processed
    commit_time: datetime


@dataclass(frozen=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # d(efault), n(othing), f(ull), i(ndex)
    columns: tuple[Column, ...]


@dataclass(frozen=True)
class Insert:
    relation_oid: int
    new: tuple[object, ...]  # str | None | UNCHANGED_TOAST per column


@dataclass(frozen=True)
class Update:
    relation_oid: int
    old: tuple[object, ...] | None  # the old row (REPLICA IDENTITY FULL) or its key, when sent
    old_is_key_only: bool
    new: tuple[object, ...]


@dataclass(frozen=True)
class Delete:
    relation_oid: int
    old: tuple[object, ...]
    old_is_key_only: bool


@dataclass(frozen=True)
class Truncate:
    relation_oids: tuple[int, ...]
    cascade: bool
    restart_identity: bool


@dataclass(frozen=True)
class Origin:
    lsn: int
    name: str


@dataclass(frozen=True)
class TypeInfo:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True)
class LogicalMessage:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


Message = Begin | Commit | Relation | Insert | Update | Delete | Truncate | Origin | TypeInfo | LogicalMessage


def pg_time(microseconds: int) -> datetime:
    return PG_EPOCH + timedelta(microseconds=microseconds)


class _Reader:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise PgOutputError(f"message ends at byte {len(self.data)}, {n} more bytes expected at {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int8(self) -> int:
        return self.take(1)[0]

    def int16(self) -> int:
        return struct.unpack(">h", self.take(2))[0]

    def int32(self) -> int:
        return struct.unpack(">i", self.take(4))[0]

    def uint32(self) -> int:
        return struct.unpack(">I", self.take(4))[0]

    def int64(self) -> int:
        return struct.unpack(">q", self.take(8))[0]

    def uint64(self) -> int:
        return struct.unpack(">Q", self.take(8))[0]

    def byte(self) -> str:
        return chr(self.int8())

    def string(self) -> str:
        end = self.data.find(b"\0", self.pos)
        if end < 0:
            raise PgOutputError(f"unterminated string at byte {self.pos}")
        text = self.data[self.pos : end].decode()
        self.pos = end + 1
        return text

    def tuple_data(self) -> tuple[object, ...]:
        values: list[object] = []
        for _ in range(self.int16()):
            kind = self.byte()
            if kind == "n":
                values.append(None)
            elif kind == "u":
                values.append(UNCHANGED_TOAST)
            elif kind in ("t", "b"):
                raw = self.take(self.int32())
                values.append(raw.decode() if kind == "t" else raw)
            else:
                raise PgOutputError(f"unknown tuple column kind {kind!r} at byte {self.pos - 1}")
        return tuple(values)

    def end(self) -> None:
        if self.pos != len(self.data):
            raise PgOutputError(f"{len(self.data) - self.pos} unexpected bytes after the message")


def parse(data: bytes) -> Message:
    """One pgoutput message (protocol version 1) from its bytes."""
    if not data:
        raise PgOutputError("empty message")
    reader = _Reader(bytes(data))
    kind = reader.byte()
    message: Message
    if kind == "B":
        message = Begin(reader.uint64(), pg_time(reader.int64()), reader.uint32())
    elif kind == "C":
        message = Commit(reader.int8(), reader.uint64(), reader.uint64(), pg_time(reader.int64()))
    elif kind == "R":
        oid, namespace, name, identity = reader.uint32(), reader.string(), reader.string(), reader.byte()
        columns = []
        for _ in range(reader.int16()):
            flags = reader.int8()
            columns.append(Column(reader.string(), reader.uint32(), reader.int32(), bool(flags & 1)))
        message = Relation(oid, namespace, name, identity, tuple(columns))
    elif kind == "I":
        oid = reader.uint32()
        if reader.byte() != "N":
            raise PgOutputError("Insert without its new tuple ('N')")
        message = Insert(oid, reader.tuple_data())
    elif kind == "U":
        oid = reader.uint32()
        marker = reader.byte()
        old = None
        if marker in ("K", "O"):
            old = reader.tuple_data()
            key_only = marker == "K"
            marker = reader.byte()
        else:
            key_only = False
        if marker != "N":
            raise PgOutputError(f"Update without its new tuple ('N'), got {marker!r}")
        message = Update(oid, old, key_only, reader.tuple_data())
    elif kind == "D":
        oid = reader.uint32()
        marker = reader.byte()
        if marker not in ("K", "O"):
            raise PgOutputError(f"Delete without its old tuple ('K' or 'O'), got {marker!r}")
        message = Delete(oid, reader.tuple_data(), marker == "K")
    elif kind == "T":
        count = reader.int32()
        options = reader.int8()
        message = Truncate(tuple(reader.uint32() for _ in range(count)), bool(options & 1), bool(options & 2))
    elif kind == "O":
        message = Origin(reader.uint64(), reader.string())
    elif kind == "Y":
        message = TypeInfo(reader.uint32(), reader.string(), reader.string())
    elif kind == "M":
        transactional = bool(reader.int8() & 1)
        lsn, prefix = reader.uint64(), reader.string()
        message = LogicalMessage(transactional, lsn, prefix, reader.take(reader.int32()))
    else:
        raise PgOutputError(f"unknown pgoutput message type {kind!r}")
    reader.end()
    return message


def lsn_text(lsn: int) -> str:
    """An LSN as PostgreSQL writes it (pg_lsn: `16/B374D848`)."""
    return f"{lsn >> 32:X}/{lsn & 0xFFFFFFFF:X}"


def lsn_int(text: str) -> int:
    """A pg_lsn's text (`16/B374D848`) as the 64-bit number."""
    high, _, low = text.partition("/")
    return (int(high, 16) << 32) | int(low, 16)
