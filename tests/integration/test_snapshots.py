"""dbt snapshots (SCD2) on the embedded ClickHouse: a change closes the old row and opens a new one."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingestion.contract import make_event
from ingestion.raw_writer import RawWriter
from tests.integration.dbt_support import run_dbt as _dbt

pytestmark = pytest.mark.integration


def _at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def _ok(args: list[str], env: dict, target) -> None:
    result = _dbt(args, env, target)
    assert result.returncode == 0, result.stdout[-5000:]


def _snapshot(env: dict, target, snapshot: str) -> None:
    """Builds the models the snapshot reads, then takes it (one dbt process: each costs seconds)."""
    _ok(["build", "--select", f"+{snapshot}", "--exclude-resource-type", "test", "unit_test", "seed"], env, target)


def test_a_profile_change_closes_the_old_user_version_and_opens_a_new_one(embedded_stack, dbt_env):
    env, database, target = dbt_env
    client = embedded_stack.client(database=database)
    raw = env["EVENTHOUSE_RAW_DATABASE"]

    def auth(event_id: str, event_type: str, user: str, at: str, payload: dict) -> dict:
        return make_event(event_type, event_id, _at(at), payload, user_id=user, service="economy-api")

    RawWriter(client, raw).add_all(
        [
            auth("a1", "auth.signup", "u1", "2026-05-01 10:00:00", {"country": "KR", "platform": "ios"}),
            auth("a2", "auth.signup", "u2", "2026-05-01 10:05:00", {"country": "US", "platform": "android"}),
            auth("a3", "auth.login", "u1", "2026-05-01 10:06:00", {"platform": "ios"}),
        ]
    ).flush()
    _snapshot(env, target, "snp_users")

    # u1 switches to the web client; a later update of u2 leaves its values as they were.
    RawWriter(client, raw).add_all(
        [
            auth("a4", "auth.profile_updated", "u1", "2026-05-02 08:00:00", {"platform": "web"}),
            auth("a5", "auth.profile_updated", "u2", "2026-05-02 09:00:00", {"country": "US"}),
        ]
    ).flush()
    _snapshot(env, target, "snp_users")
    _snapshot(env, target, "snp_users")  # nothing changed: no new rows

    rows = client.query(
        "SELECT user_id, country, platform, dbt_valid_from, dbt_valid_to FROM snp_users "
        "ORDER BY user_id, dbt_valid_from"
    ).result_rows
    as_naive = [(u, c, p, f.replace(tzinfo=None), t.replace(tzinfo=None) if t else None) for u, c, p, f, t in rows]
    assert as_naive == [
        ("u1", "KR", "ios", datetime(2026, 5, 1, 10, 0), datetime(2026, 5, 2, 8, 0)),
        ("u1", "KR", "web", datetime(2026, 5, 2, 8, 0), None),
        ("u2", "US", "android", datetime(2026, 5, 1, 10, 5), None),
    ]
    _ok(["test", "--select", "snp_users"], env, target)


def test_an_order_status_change_and_a_late_delete_each_start_a_version(embedded_stack, dbt_env):
    env, database, target = dbt_env
    client = embedded_stack.client(database=database)
    raw = env["EVENTHOUSE_RAW_DATABASE"]

    def order(event_id: str, event_type: str, at: str, payload: dict) -> dict:
        payload = {"order_id": "ord_1", **payload}
        return make_event(event_type, event_id, _at(at), payload, user_id="c1", service="order-service")

    created = {"status": "PENDING", "version": 1, "amount_cents": 2000, "product_ids": ["p1"], "items": []}
    RawWriter(client, raw).add_all([order("o1", "order.created", "2026-05-01 12:00:00", created)]).flush()
    _snapshot(env, target, "snp_order_status")

    # Shipped (v2), then deleted (v3); the v2 event arrives after the delete and must not win.
    deleted = {"version": 3, "deleted_at": "2026-05-01T14:00:00.000Z", "deleted_by": "admin_1"}
    shipped = {"status": "SHIPPED", "previous_status": "PENDING", "version": 2}
    writer = RawWriter(client, raw)
    writer.add_all([order("o3", "order.deleted", "2026-05-01 14:00:00", deleted)]).flush()
    writer.add_all([order("o2", "order.status_changed", "2026-05-01 13:00:00", shipped)]).flush()
    _snapshot(env, target, "snp_order_status")

    rows = client.query(
        "SELECT order_status, is_deleted, dbt_valid_from, dbt_valid_to FROM snp_order_status ORDER BY dbt_valid_from"
    ).result_rows
    as_naive = [(s, d, f.replace(tzinfo=None), t.replace(tzinfo=None) if t else None) for s, d, f, t in rows]
    # The latest state is the delete (v3; it carries no status, so the last known one stays).
    assert as_naive == [
        ("PENDING", False, datetime(2026, 5, 1, 12, 0), datetime(2026, 5, 1, 14, 0)),
        ("SHIPPED", True, datetime(2026, 5, 1, 14, 0), None),
    ]
    _ok(["test", "--select", "snp_order_status"], env, target)
