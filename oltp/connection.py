"""Connecting to the orders service's PostgreSQL, with errors that name the server (never its password)."""

from __future__ import annotations

from typing import Any


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be reached or refused us; the message names the server, never the password."""


def describe_dsn(dsn: str) -> str:
    """`user@host:port/dbname` from a libpq DSN or URI, leaving out the password and other options."""
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = conninfo_to_dict(dsn)
    except Exception:  # noqa: BLE001 - an unparseable DSN still gets a (password-free) description
        return "an unparseable EVENTHOUSE_POSTGRES_DSN"
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{parts.get('host') or 'localhost'}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


def connect(dsn: str, *, autocommit: bool = False, connect_timeout: int = 5) -> Any:
    """A psycopg connection, or PostgresUnavailable naming the server and what went wrong."""
    import psycopg

    try:
        return psycopg.connect(dsn, autocommit=autocommit, connect_timeout=connect_timeout)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise PostgresUnavailable(
            f"PostgreSQL at {describe_dsn(dsn)} is not reachable: {reason} "
            "(start it with `eventhouse stack up`, or set EVENTHOUSE_POSTGRES_DSN)"
        ) from None
