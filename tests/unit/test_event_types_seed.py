"""The seed the dbt side reads its event types from is the registry's, written out."""

from __future__ import annotations

import csv

from ingestion.contract import REGISTRY
from ingestion.event_types_seed import SEED_PATH, render
from ingestion.topics import topic_for


def test_the_committed_seed_is_the_registry_written_out():
    assert SEED_PATH.read_text() == render(), "seeds/event_types.csv is stale: run `make event-types`"


def test_the_seed_has_one_row_per_registered_type_with_its_domain_and_topic():
    with SEED_PATH.open() as seed:
        rows = list(csv.DictReader(seed))
    assert len(rows) == len(REGISTRY) == 24
    for row in rows:
        assert row["domain"] == REGISTRY[row["event_type"]].domain
        assert row["topic"] == topic_for(row["event_type"]).name
        assert row["schema_version"] == "1"
    assert sorted(r["event_type"] for r in rows if r["domain"] == "orders") == [
        "order.created",
        "order.deleted",
        "order.status_changed",
    ]
