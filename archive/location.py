"""Where the archive's files are, and the ClickHouse table function that reaches them.

A local archive is a directory on the ClickHouse server's machine, under its user_files_path (the
only place ClickHouse, the embedded server included, reads or writes files): ClickHouse's `file()`.
An S3 archive (`s3://bucket/prefix`, or an `https://` / `http://` endpoint URL such as MinIO's) is
written with `s3()`; credentials come from the server's own configuration (environment or named
collection), never from the statement, so they stay out of query logs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

from settings import ConfigError

FORMAT = "Parquet"
FILE_NAME = "part.parquet"
_GLOB_CHARS = re.compile(r"[*?{}\[\]]")


def sql_string(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def hour_start(moment: datetime) -> datetime:
    """The UTC hour a moment falls in (naive = UTC)."""
    moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return moment.replace(minute=0, second=0, microsecond=0)


def partition_path(table: str, hour: datetime) -> str:
    """`<table>/dt=YYYY-MM-DD/hour=HH`: Hive-style, so engines that prune by dt/hour read less."""
    start = hour_start(hour)
    return f"{table}/dt={start:%Y-%m-%d}/hour={start:%H}"


@dataclass(frozen=True)
class ArchiveLocation:
    url: str

    def __post_init__(self) -> None:
        if _GLOB_CHARS.search(self.url):
            raise ConfigError(f"EVENTHOUSE_ARCHIVE_URL={self.url!r}: the location must not contain * ? {{ }} [ ]")
        if not self.url:
            raise ConfigError("EVENTHOUSE_ARCHIVE_URL is empty")

    @property
    def is_s3(self) -> bool:
        return self.url.startswith(("s3://", "https://", "http://"))

    @property
    def root(self) -> str:
        """The location as ClickHouse's table functions take it (s3:// becomes its https endpoint)."""
        url = self.url.rstrip("/")
        if url.startswith("s3://"):
            bucket, _, prefix = url[len("s3://") :].partition("/")
            return f"https://{bucket}.s3.amazonaws.com" + (f"/{prefix}" if prefix else "")
        return url

    def local_root(self) -> Path | None:
        """The archive directory when it is local (on the ClickHouse server's machine)."""
        return None if self.is_s3 else Path(self.url)

    def hour_file(self, table: str, hour: datetime) -> str:
        return f"{self.root}/{partition_path(table, hour)}/{FILE_NAME}"

    def table_glob(self, table: str, days: list[date] | None = None) -> str:
        """Every hour's file of a table, or of the given days only ({...} alternatives)."""
        if days is None:
            dt = "*"
        elif len(days) == 1:
            dt = f"{days[0]:%Y-%m-%d}"
        else:
            dt = "{" + ",".join(f"{day:%Y-%m-%d}" for day in sorted(set(days))) + "}"
        return f"{self.root}/{table}/dt={dt}/hour=*/{FILE_NAME}"

    def table_function(self, path: str) -> str:
        """`file('<path>', 'Parquet')` or `s3('<url>', 'Parquet')`."""
        function = "s3" if self.is_s3 else "file"
        return f"{function}({sql_string(path)}, {sql_string(FORMAT)})"
