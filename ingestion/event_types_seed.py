"""Writes seeds/event_types.csv from the event registry (ingestion/contract.py), so the dbt side
reads the one list of event types: `make event-types` (a unit test fails when they disagree)."""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from ingestion.contract import REGISTRY

SEED_PATH = Path(__file__).resolve().parents[1] / "seeds" / "event_types.csv"
COLUMNS = ("event_type", "domain", "topic", "schema_version")


def render() -> str:
    """The seed's CSV: one row per registered event type, in the registry's order."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for spec in REGISTRY.values():
        writer.writerow((spec.name, spec.domain, spec.topic, spec.version))
    return out.getvalue()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=SEED_PATH, help="where to write the CSV (default: %(default)s)")
    args = parser.parse_args(argv)
    args.out.write_text(render())
    print(f"wrote {len(REGISTRY)} event types to {args.out}")


if __name__ == "__main__":
    main()
