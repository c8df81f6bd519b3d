"""Daily partitions of the date-based marts (tag `daily_partitioned`): a partition run recomputes exactly its days.

Raw events on 120 consecutive days (more than ClickHouse's default 100 partitions per insert) are
written straight into the raw tables (`RawWriter`, the loader's row format): each day one player
(a game session with a stage clear, a gold grant, a shop purchase), one order and one clickstream
session. The marts build with one partition per day. Then a second player, order and clickstream
session arrive on two days; the upstream models pick them up, and a partition run of the first
day (the orchestrator's command: `dbt build --select tag:daily_partitioned --exclude-resource-type
unit_test --vars {partition_start_date, partition_end_date}`; the unit tests are `make dbt-checks`')
changes that day's rows only: every other partition, the second day's included, keeps its very
parts. A run without the vars catches the second day up and gives the tables a full refresh gives.
Only the marts and what they and their tests read are built: the rest of the project is
test_dbt_project.py's.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from ingestion.contract import make_event
from ingestion.raw_writer import RawWriter
from orchestration.project import prepare_dbt_project
from orchestration.translator import DAILY_PARTITIONED_TAG
from tests.integration.conftest import WORK_DATABASE, prepared_database
from tests.integration.dbt_support import run_dbt

pytestmark = pytest.mark.integration

START = date(2026, 1, 5)
DAYS = 120
DAY1 = START + timedelta(days=60)
DAY2 = DAY1 + timedelta(days=1)


@functools.cache
def _marts() -> dict[str, str]:
    """Every model tagged daily_partitioned (from the manifest), with the day column it is partitioned by."""
    manifest = json.loads(prepare_dbt_project().read_text())
    marts = {}
    for node in manifest["nodes"].values():
        if DAILY_PARTITIONED_TAG in node["tags"]:
            match = re.fullmatch(r"toYYYYMMDD\((\w+)\)", node["config"].get("partition_by") or "")
            assert match, f"{node['name']} is tagged {DAILY_PARTITIONED_TAG} but not partitioned by toYYYYMMDD(<day>)"
            marts[node["name"]] = match.group(1)
    return marts


@functools.cache
def _selection() -> list[str]:
    """What the tests build: the partitioned marts, every model they read, and every model a test of
    theirs reads (assert_commerce_marts_add_up compares with marts that are not partitioned), with
    their parents; the rest of the project is not read here (test_dbt_project.py builds it all)."""
    nodes = json.loads(prepare_dbt_project().read_text())["nodes"]
    marts = {uid for uid, node in nodes.items() if DAILY_PARTITIONED_TAG in node["tags"]}
    read_by_tests = {
        parent
        for node in nodes.values()
        if node["resource_type"] == "test" and marts & set(node["depends_on"]["nodes"])
        for parent in node["depends_on"]["nodes"]
        if parent.startswith("model.") and parent not in marts
    }
    return [f"+tag:{DAILY_PARTITIONED_TAG}", *sorted(f"+{nodes[uid]['name']}" for uid in read_by_tests)]


@pytest.fixture(scope="module")
def module_dbt_env(embedded_stack, prepared_template, tmp_path_factory):
    """One dbt database and raw database for the module, a copy of the session's prepared template
    (seeds, the incremental models created empty), and one target directory that starts from the
    session's parse, so every dbt command without vars parses partially. Each test leaves the
    database as the other can start from: the first rebuilds what it reads with --full-refresh; the
    second reads only table layouts.

    Yields (env, database, target_path), as tests/integration/conftest.py's `dbt_env` does per test.
    """
    target = tmp_path_factory.mktemp("dbt-daily-partitions")
    shutil.copy(prepared_template.work_parse, target / "partial_parse.msgpack")
    # WORK_DATABASE, whose parse the session holds: no test of this module uses dbt_env meanwhile
    with prepared_database(embedded_stack, prepared_template, WORK_DATABASE) as (env, database):
        yield env, database, target


def _with_vars(target: Path, tmp_path: Path, name: str) -> Path:
    """A copy of `target` for an invocation with --vars: dbt parses in full when the vars change
    and saves that parse, so running it in `target` would make the next run without vars parse in
    full again."""
    own = tmp_path / name
    own.mkdir()
    shutil.copy(target / "partial_parse.msgpack", own / "partial_parse.msgpack")
    return own


def _ok(args: list[str], env: dict, target) -> str:
    result = run_dbt(args, env, target)
    assert result.returncode == 0, result.stdout[-5000:]
    return result.stdout


def _day_events(day: date, who: str) -> list[dict]:
    """9 events of `who` on `day`: player_<who>'s game session, grant and purchase, an order of
    customer_<who>, a clickstream session with a click and a buy."""
    at = datetime.combine(day, time(10), tzinfo=UTC)
    key = f"{who}-{day:%Y%m%d}"
    player, game_session = f"player_{who}", f"game-{key}"
    stage = {"chapter": 1, "stage": 1, "mode": "story"}
    clicks_session = str(day.toordinal() * 10 + (1 if who == "base" else 2))
    return [
        make_event("game.session_start", f"ss-{key}", at, {}, user_id=player, session_id=game_session),
        make_event(
            "game.stage_start", f"st-{key}", at + timedelta(minutes=1), stage, user_id=player, session_id=game_session
        ),
        make_event(
            "game.stage_clear",
            f"sc-{key}",
            at + timedelta(minutes=2),
            {**stage, "clear_time_ms": 60_000, "score": 1000},
            user_id=player,
            session_id=game_session,
        ),
        make_event(
            "game.session_end",
            f"se-{key}",
            at + timedelta(minutes=3),
            {"duration_ms": 180_000},
            user_id=player,
            session_id=game_session,
        ),
        make_event(
            "reward.granted",
            f"rg-{key}",
            at + timedelta(minutes=2),
            {"delta_gold": 100, "balance": 100, "reason": "stage_clear"},
            user_id=player,
        ),
        make_event(
            "shop.purchase",
            f"sp-{key}",
            at + timedelta(minutes=4),
            {
                "tx_id": f"tx-{key}",
                "status": "completed",
                "product_id": "gold_500",
                "amount_gold": 500,
                "price_cents": 99,
            },
            user_id=player,
        ),
        make_event(
            "order.created",
            f"oc-{key}",
            at + timedelta(minutes=5),
            {"order_id": f"order-{key}", "status": "PENDING", "version": 1, "amount_cents": 1000},
            user_id=f"customer_{who}",
        ),
        make_event(
            "clickstream.click",
            f"ck-{key}",
            at + timedelta(minutes=6),
            {"item_id": 1, "category": "A"},
            user_id=None,
            session_id=clicks_session,
        ),
        make_event(
            "clickstream.purchase",
            f"cp-{key}",
            at + timedelta(minutes=7),
            {"item_id": 1, "price": 10.0, "quantity": 1},
            user_id=None,
            session_id=clicks_session,
        ),
    ]


def _rows(client, table: str, column: str, day: date) -> list[tuple]:
    return client.query(f"SELECT * FROM `{table}` WHERE {column} = %(day)s ORDER BY ALL", {"day": day}).result_rows


def _parts(client, database: str) -> dict[tuple[str, str], list[str]]:
    """The active parts of each (mart, partition id)."""
    result = client.query(
        "SELECT table, partition_id, groupArray(name) FROM (SELECT * FROM system.parts"
        " WHERE database = %(db)s AND active AND table IN %(tables)s ORDER BY name)"
        " GROUP BY table, partition_id",
        {"db": database, "tables": list(_marts())},
    )
    return {(table, partition): names for table, partition, names in result.result_rows}


def _checksums(client) -> dict[str, tuple]:
    return {
        table: tuple(client.query(f"SELECT count(), sum(cityHash64(*)) FROM `{table}`").result_rows[0])
        for table in _marts()
    }


def test_a_partition_run_recomputes_exactly_its_days(embedded_stack, module_dbt_env, tmp_path):
    env, database, target = module_dbt_env
    selection = ["--select", *_selection()]
    assert {"kpi_daily", "commerce_daily_sales", "engagement_active_users"} <= _marts().keys()  # read below
    client = embedded_stack.client(database=database)
    writer = RawWriter(client, env["EVENTHOUSE_RAW_DATABASE"])
    for offset in range(DAYS):
        writer.add_all(_day_events(START + timedelta(days=offset), "base"))
    writer.flush()

    # A first build of 120 days: one insert touches 120 partitions of each mart.
    _ok(["run", "--full-refresh", *selection], env, target)
    for table, column in _marts().items():
        days = client.command(f"SELECT uniqExact({column}) FROM `{table}`")
        # (trending items need trending_min_recent_clicks clicks of an item in the recent window:
        # the first as_of days of this data have none, so that mart starts later)
        expected_days = DAYS - 2 if table == "clickstream_trending_items" else DAYS
        assert days == expected_days, table
        assert (
            client.command(
                f"SELECT uniqExact(partition_id) FROM system.parts WHERE database = '{database}' AND table = '{table}'"
                " AND active"
            )
            == expected_days
        ), table
    before = {
        table: {day: _rows(client, table, column, day) for day in (DAY1, DAY2)} for table, column in _marts().items()
    }
    parts_before = _parts(client, database)
    assert client.query(
        "SELECT event_count, dau, revenue FROM kpi_daily WHERE metric_date = %(d)s", {"d": DAY1}
    ).result_rows == [(9, 2, Decimal("10.99"))]

    # A second player, order and clickstream session on DAY1 and DAY2; the models that are not
    # partitioned pick them up, then the partition run of DAY1 alone (with the tests of the
    # partitioned marts, assert_commerce_marts_add_up's comparison with fct_orders included).
    writer.add_all([*_day_events(DAY1, "extra"), *_day_events(DAY2, "extra")]).flush()
    _ok(["run", *selection, "--exclude", "tag:daily_partitioned"], env, target)
    day1 = json.dumps({"partition_start_date": str(DAY1), "partition_end_date": str(DAY1)})
    _ok(
        ["build", "--select", "tag:daily_partitioned", "--exclude-resource-type", "unit_test", "--vars", day1],
        env,
        _with_vars(target, tmp_path, "partition-run"),
    )

    for table, column in _marts().items():
        assert _rows(client, table, column, DAY1) != before[table][DAY1], f"{table}: {DAY1} not recomputed"
        assert _rows(client, table, column, DAY2) == before[table][DAY2], f"{table}: {DAY2} changed"
    # Every partition but DAY1's is the very same part as before (nothing else was rewritten).
    parts_after = _parts(client, database)
    day1_id = DAY1.strftime("%Y%m%d")
    assert {k: v for k, v in parts_after.items() if k[1] != day1_id} == {
        k: v for k, v in parts_before.items() if k[1] != day1_id
    }
    assert all(parts_after[(table, day1_id)] != parts_before[(table, day1_id)] for table in _marts())

    kpi = "SELECT metric_date, event_count, dau, revenue FROM kpi_daily WHERE metric_date IN %(d)s ORDER BY 1"
    assert client.query(kpi, {"d": [DAY1, DAY2]}).result_rows == [
        (DAY1, 18, 4, Decimal("21.98")),
        (DAY2, 9, 2, Decimal("10.99")),  # not recomputed yet
    ]
    sales = (
        "SELECT order_date, orders, revenue, customers FROM commerce_daily_sales WHERE order_date IN %(d)s ORDER BY 1"
    )
    assert client.query(sales, {"d": [DAY1, DAY2]}).result_rows == [
        (DAY1, 2, Decimal("20.00"), 2),
        (DAY2, 1, Decimal("10.00"), 1),
    ]
    # The trailing windows of DAY1 read the days before it; the days after DAY1 keep their rows
    # (player_extra is not in their WAU until they are recomputed).
    active = (
        "SELECT activity_date, dau, wau, mau FROM engagement_active_users"
        " WHERE user_type = 'player' AND activity_date IN %(d)s ORDER BY 1"
    )
    later = DAY1 + timedelta(days=5)
    assert client.query(active, {"d": [DAY1, DAY2, later]}).result_rows == [
        (DAY1, 2, 2, 2),
        (DAY2, 1, 1, 1),
        (later, 1, 1, 1),
    ]

    # A run without the vars recomputes every day: DAY2 catches up, and the tables are what a
    # full refresh builds.
    _ok(["run", "--select", "tag:daily_partitioned"], env, target)
    assert client.query(kpi, {"d": [DAY1, DAY2]}).result_rows == [
        (DAY1, 18, 4, Decimal("21.98")),
        (DAY2, 18, 4, Decimal("21.98")),
    ]
    assert client.query(active, {"d": [DAY1, DAY2, later]}).result_rows == [
        (DAY1, 2, 2, 2),
        (DAY2, 2, 2, 2),
        (later, 1, 2, 2),
    ]
    for table, column in _marts().items():
        assert _rows(client, table, column, DAY2) != before[table][DAY2], f"{table}: {DAY2} not caught up"
    incremental = _checksums(client)
    _ok(["run", "--select", "tag:daily_partitioned", "--full-refresh"], env, target)
    assert _checksums(client) == incremental

    # The vars are checked.
    reversed_days = json.dumps({"partition_start_date": str(DAY2), "partition_end_date": str(DAY1)})
    result = run_dbt(
        ["compile", "--select", "kpi_daily", "--vars", reversed_days],
        env,
        _with_vars(target, tmp_path, "reversed-days"),
    )
    assert result.returncode != 0 and "is after partition_end_date" in result.stdout, result.stdout[-2000:]


def test_a_mart_built_before_it_was_partitioned_is_rebuilt_in_full(embedded_stack, module_dbt_env):
    """A database from before the day partitions holds kpi_daily as a plain table: insert_overwrite
    would fail on it ("Tables have different partition key"); the on-run-start macro drops it and
    the run builds it afresh, and leaves alone what this run does not select."""
    env, database, target = module_dbt_env
    client = embedded_stack.client(database=database)
    for table in ("kpi_daily", "latency_daily"):
        client.command(f"DROP TABLE `{table}`")
        client.command(
            f"CREATE TABLE `{table}` ENGINE = MergeTree ORDER BY metric_date "
            "AS SELECT toDate('2000-01-01') AS metric_date, toUInt64(42) AS stale"
        )
    out = _ok(["run", "--select", "kpi_daily"], env, target)
    assert "dropping" in out and "kpi_daily" in out
    keys = dict(
        client.query(
            "SELECT name, partition_key FROM system.tables WHERE database = currentDatabase() "
            "AND name IN ('kpi_daily', 'latency_daily')"
        ).result_rows
    )
    assert keys["kpi_daily"].replace(" ", "") in {"toYYYYMMDD(metric_date)", "(toYYYYMMDD(metric_date))"}
    assert client.command("SELECT count() FROM kpi_daily WHERE metric_date = '2000-01-01'") == 0
    assert "stale" not in [
        c
        for (c,) in client.query(
            "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'kpi_daily'"
        ).result_rows
    ]
    # not selected: untouched, stale layout and all
    assert keys["latency_daily"] == ""
    assert client.command("SELECT stale FROM latency_daily") == 42
