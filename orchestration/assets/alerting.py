"""The alert publisher, as Dagster sees it: the `alerts` table observed (alerts per type, the last one).

`eventhouse alerts` publishes each new live anomaly (models/marts/live) and pipeline alert once, to
ClickHouse's `alerts` table, the Kafka topic `anomalies` and optionally a webhook (alerting/). It
runs as its own long-lived process, not as a Dagster op: its exactly-once protocol for Kafka
assumes one publisher at a time. Dagster observes its output instead, so the UI shows how many
alerts of each type it raised, when the last one was published, and deliveries still owed.
"""

import dagster as dg

from orchestration.resources import EventhouseResource
from orchestration.translator import raw_table_key

ALERTING_GROUP = "alerting"
ALERTS_KEY = raw_table_key("alerts")
# the dbt view the publisher polls (its asset key is the model's name)
LIVE_ANOMALIES_KEY = dg.AssetKey(["live_anomalies"])

ALERTS_SPEC = dg.AssetSpec(
    key=ALERTS_KEY,
    deps=[LIVE_ANOMALIES_KEY],
    group_name=ALERTING_GROUP,
    kinds={"clickhouse", "kafka"},
    description="Alerts `eventhouse alerts` published, once each, to this table, the Kafka topic `anomalies` "
    "and an optional webhook: the live anomalies of live_anomalies and the pipeline alerts (dead-letter rate, "
    "insert latency, loader lag, freshness, failing deliveries).",
)


def _table_exists(client, database: str, table: str) -> bool:
    return bool(
        client.command(
            "SELECT count() FROM system.tables WHERE database = {db:String} AND name = {t:String}",
            parameters={"db": database, "t": table},
        )
    )


@dg.multi_observable_source_asset(specs=[ALERTS_SPEC], name="alerts", can_subset=False)
def alerts(context, eventhouse: EventhouseResource):
    """Alerts per family and type, the newest publication, and deliveries not yet made."""
    settings = eventhouse.ensure_stack(context.log)
    client = eventhouse.client()
    raw = settings.clickhouse.raw_database
    by_type: list[tuple] = []
    last_published = None
    owed: list[tuple] = []
    if _table_exists(client, raw, "alerts"):
        # (FINAL: a retried insert of the same alert may sit in an unmerged part)
        by_type = client.query(
            f"SELECT anomaly_family, anomaly_type, count(), max(published_at) FROM `{raw}`.alerts FINAL "
            "GROUP BY anomaly_family, anomaly_type ORDER BY anomaly_family, anomaly_type"
        ).result_rows
        last_published = max((row[3] for row in by_type), default=None)
    if _table_exists(client, raw, "alert_deliveries"):
        # the latest row of each (alert, channel) says where its delivery stands
        owed = client.query(
            "SELECT channel, count() FROM (SELECT channel, anomaly_id, argMax(state, seq) AS state "
            f"FROM `{raw}`.alert_deliveries GROUP BY channel, anomaly_id) WHERE state != 'delivered' "
            "GROUP BY channel ORDER BY channel"
        ).result_rows
    total = sum(int(row[2]) for row in by_type)
    table = "\n".join(
        ["| family | type | alerts | last published |", "|---|---|---|---|"]
        + [f"| {family} | {kind} | {n} | {last:%Y-%m-%d %H:%M:%S} |" for family, kind, n, last in by_type]
    )
    yield dg.ObserveResult(
        asset_key=ALERTS_KEY,
        data_version=dg.DataVersion(str(total)),
        metadata={
            "alerts": dg.MetadataValue.int(total),
            "alerts_by_type": dg.MetadataValue.md(table if by_type else "none yet"),
            "last_alert_published_at": dg.MetadataValue.text(
                f"{last_published:%Y-%m-%d %H:%M:%S} UTC" if last_published else "never"
            ),
            "deliveries_owed": dg.MetadataValue.md("\n".join(f"- {channel}: {n}" for channel, n in owed) or "none"),
        },
    )
