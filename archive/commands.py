"""`eventhouse archive`, `eventhouse replay --from-archive` and `eventhouse retention`: arguments and runs.

eventhouse/cli.py adds these subcommands with add_commands(); the work is in archive/ and retention/.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from settings import parse_utc


def _moment(what: str) -> Any:
    def parse(raw: str) -> datetime:
        return parse_utc(raw, what)

    parse.__name__ = "ISO 8601 date or time"  # argparse names the type so in its error
    return parse


def _client(settings: Any) -> Any:
    import clickhouse_connect

    return clickhouse_connect.get_client(**{**settings.clickhouse.client_kwargs(), "database": "default"})


def cmd_archive(args: argparse.Namespace) -> int:
    from archive.location import ArchiveLocation, hour_start
    from archive.writer import archive_hour, hours_with_rows
    from settings import archive_url, load_settings

    settings = load_settings()
    client = _client(settings)
    location = ArchiveLocation(archive_url())
    raw = settings.clickhouse.raw_database
    if args.all:
        hours = hours_with_rows(client, raw)
    else:
        # default: the last hour that has ended
        hours = [args.hour or hour_start(datetime.now(UTC)) - timedelta(hours=1)]
    results = [archive_hour(client, location, raw, hour).summary() for hour in hours]
    print(json.dumps({"archive": location.url, "hours": results}, indent=2))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from archive.location import ArchiveLocation
    from archive.replay import ReplayError, check_window, replay, require_archive
    from settings import archive_url, load_settings

    if not args.from_archive:
        raise ReplayError("replay reads the raw archive: pass --from-archive")
    # before connecting: a wrong window or a missing archive is the caller's error
    check_window(args.since, args.until)
    location = ArchiveLocation(archive_url())
    require_archive(location)
    settings = load_settings()
    summary = replay(_client(settings), settings, location, args.since, args.until, args.to)
    print(json.dumps(summary.as_dict(), indent=2))
    return 0


def cmd_retention(args: argparse.Namespace) -> int:
    from retention.deleted_orders import purge_deleted_orders
    from settings import deleted_order_retention_days, load_settings, retention_now

    settings = load_settings()
    report = purge_deleted_orders(
        _client(settings),
        settings.clickhouse.raw_database,
        settings.clickhouse.database,
        args.now or retention_now(),
        deleted_order_retention_days(),
        dry_run=args.dry_run,
    )
    print(json.dumps(report.as_dict(), indent=2))
    return 0


def add_commands(sub: Any) -> None:
    archive = sub.add_parser("archive", help="write raw tables' ingest hours to the Parquet archive")
    which = archive.add_mutually_exclusive_group()
    which.add_argument(
        "--hour", type=_moment("--hour"), default=None, help="the UTC hour to archive (default: the last ended hour)"
    )
    which.add_argument("--all", action="store_true", help="every ingest hour the raw tables have rows of")
    archive.set_defaults(func=cmd_archive)

    replay = sub.add_parser("replay", help="restore the raw tables (or Kafka) from the Parquet archive")
    replay.add_argument("--from-archive", action="store_true", help="read the raw archive (EVENTHOUSE_ARCHIVE_URL)")
    replay.add_argument(
        "--since", type=_moment("--since"), default=None, help="first ingest time to replay (ISO 8601, UTC)"
    )
    replay.add_argument(
        "--until", type=_moment("--until"), default=None, help="replay ingest times before this (ISO 8601, UTC)"
    )
    replay.add_argument(
        "--to",
        choices=("raw", "kafka"),
        default="raw",
        help="raw: insert into the raw tables with loaded_at = now (default); kafka: publish the events again",
    )
    replay.set_defaults(func=cmd_replay)

    retention = sub.add_parser("retention", help="remove soft-deleted orders 7 days after deleted_at")
    retention.add_argument(
        "--now",
        type=_moment("--now"),
        default=None,
        help="the purge's clock (ISO 8601; default EVENTHOUSE_RETENTION_NOW, else the real time)",
    )
    retention.add_argument("--dry-run", action="store_true", help="count what would be removed, remove nothing")
    retention.set_defaults(func=cmd_retention)
