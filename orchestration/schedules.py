"""Schedules: a daily full materialization (runs when `persona ui` starts the daemon)."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from orchestration.jobs import full_job

daily_full = ScheduleDefinition(
    name="daily_full_materialization",
    job=full_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Rebuild the whole graph every day at 03:00 UTC.",
)
