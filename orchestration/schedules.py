"""Schedules: hourly incremental refresh, and the daily batch at 03:00 Seoul for the previous day."""

from datetime import UTC, datetime, timedelta

import dagster as dg

from orchestration.assets.archive import hour_partition_key
from orchestration.jobs import archive_job, daily_job, hourly_job, retention_job

DAILY_BATCH_TIMEZONE = "Asia/Seoul"


def utc_day(moment: datetime) -> str:
    return moment.astimezone(UTC).date().isoformat()


def previous_utc_day(moment: datetime) -> str:
    """The last UTC day that had ended at `moment` (03:00 Seoul is 18:00 UTC of the day before)."""
    return (moment.astimezone(UTC) - timedelta(days=1)).date().isoformat()


@dg.schedule(job=hourly_job, cron_schedule="0 * * * *", execution_timezone="UTC", name="hourly_refresh_schedule")
def hourly_refresh_schedule(context) -> dg.RunRequest:
    day = utc_day(context.scheduled_execution_time)
    return dg.RunRequest(
        run_key=context.scheduled_execution_time.isoformat(),
        partition_key=day,
        tags={"eventhouse/trigger": "hourly"},
    )


@dg.schedule(
    job=daily_job,
    cron_schedule="0 3 * * *",
    execution_timezone=DAILY_BATCH_TIMEZONE,
    name="daily_partitions_schedule",
)
def daily_partitions_schedule(context) -> dg.RunRequest:
    day = previous_utc_day(context.scheduled_execution_time)
    return dg.RunRequest(run_key=day, partition_key=day, tags={"eventhouse/trigger": "daily"})


# Each hour at :15, the hour that ended: rows the loader was still writing at its end have landed by then.
@dg.schedule(job=archive_job, cron_schedule="15 * * * *", execution_timezone="UTC", name="archive_raw_schedule")
def archive_schedule(context) -> dg.RunRequest:
    hour = previous_hour_partition(context.scheduled_execution_time)
    return dg.RunRequest(run_key=hour, partition_key=hour, tags={"eventhouse/trigger": "hourly"})


def previous_hour_partition(moment: datetime) -> str:
    """The archive partition of the hour before the one `moment` falls in."""
    return hour_partition_key(moment.astimezone(UTC) - timedelta(hours=1))


# Daily at 04:00 UTC, after the daily batch (03:00 Seoul is 18:00 UTC).
@dg.schedule(job=retention_job, cron_schedule="0 4 * * *", execution_timezone="UTC", name="retention_schedule")
def retention_schedule(context) -> dg.RunRequest:
    return dg.RunRequest(run_key=utc_day(context.scheduled_execution_time), tags={"eventhouse/trigger": "daily"})


SCHEDULES = [hourly_refresh_schedule, daily_partitions_schedule, archive_schedule, retention_schedule]
