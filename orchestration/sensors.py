"""Kafka lag sensor: launch ingestion for the domains whose loader has fallen behind."""

import dagster as dg

from ingestion.lag import LagUnavailable, group_lag
from ingestion.raw_tables import raw_table
from ingestion.topics import DOMAINS, topics_for_domains
from orchestration.assets.ingestion import loader_group
from orchestration.jobs import ingestion_job
from orchestration.resources import EventhouseResource
from orchestration.translator import raw_table_key
from settings import lag_threshold


@dg.sensor(job=ingestion_job, minimum_interval_seconds=60, name="kafka_lag_sensor")
def kafka_lag_sensor(context, eventhouse: EventhouseResource):
    """Lag = partition highwater (from a fetch, as the loader sees it) minus the group's committed offset."""
    settings = eventhouse.settings()  # a sensor observes; it never starts servers
    threshold = lag_threshold()
    lagging: dict[str, int] = {}
    highwater_total = 0
    try:
        for domain in DOMAINS:
            lag = group_lag(settings.kafka, loader_group(domain), [s.name for s in topics_for_domains([domain])])
            highwater_total += sum(lag.highwater_by_topic().values())
            if lag.total > threshold:
                lagging[domain] = lag.total
    except (LagUnavailable, OSError) as error:
        return dg.SkipReason(f"could not read Kafka lag: {error}")
    except Exception as error:  # kafka-python raises its own NoBrokersAvailable etc.
        return dg.SkipReason(f"Kafka is not reachable at {settings.kafka.bootstrap}: {error}")
    if not lagging:
        return dg.SkipReason(f"lag at or below {threshold} messages for every domain")
    summary = ", ".join(f"{domain} {n}" for domain, n in sorted(lagging.items()))
    context.log.info(f"lag above {threshold}: {summary}")
    return dg.RunRequest(
        # one run per state of the topics: the same backlog does not launch twice
        run_key=f"{'+'.join(sorted(lagging))}@{highwater_total}",
        asset_selection=[raw_table_key(raw_table(domain)) for domain in sorted(lagging)],
        tags={"eventhouse/trigger": "kafka_lag", "eventhouse/lag": summary},
    )


SENSORS = [kafka_lag_sensor]
