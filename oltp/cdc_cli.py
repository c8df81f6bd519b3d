"""`eventhouse cdc`: the command line of the CDC capture (oltp/cdc.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from settings import DEFAULT_CDC_BATCH_CHANGES, DEFAULT_CDC_POLL_SECONDS, DEFAULT_CDC_SLOT


def add_cdc_parser(sub: Any, positive_int: Callable[[str], int], positive_float: Callable[[str], float]) -> None:
    cdc = sub.add_parser(
        "cdc",
        help="copy the OLTP users, products and leaderboard tables to Kafka by change data capture (Debezium shape)",
    )
    cdc.add_argument("--once", action="store_true", help="drain the replication slot, print a JSON summary and exit")
    cdc.add_argument("--slot", default=DEFAULT_CDC_SLOT, help="logical replication slot (default %(default)s)")
    cdc.add_argument(
        "--poll-seconds",
        type=positive_float,
        default=DEFAULT_CDC_POLL_SECONDS,
        help="seconds between peeks at the slot when it is drained (default %(default)s)",
    )
    cdc.add_argument(
        "--batch-changes",
        type=positive_int,
        default=DEFAULT_CDC_BATCH_CHANGES,
        help="changes decoded per peek, rounded up to whole transactions (default %(default)s)",
    )
    cdc.set_defaults(func=cmd_cdc)


def cmd_cdc(args: argparse.Namespace) -> int:
    from oltp.cdc import CdcCapture, CdcConfig
    from settings import load_settings, postgres_dsn

    config = CdcConfig(
        dsn=postgres_dsn(),
        slot=args.slot,
        poll_seconds=args.poll_seconds,
        batch_changes=args.batch_changes,
        once=args.once,
    )
    stats = CdcCapture(load_settings(), config).run()
    if args.once:
        print(json.dumps(stats.summary(), indent=2))
    return 0
