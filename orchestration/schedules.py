"""Schedules (they run when `persona ui` starts the daemon; each is also runnable from the UI)."""

from dagster import DefaultScheduleStatus, ScheduleDefinition

from orchestration.jobs import drift_check_job, full_job

daily_full = ScheduleDefinition(
    name="daily_full_materialization",
    job=full_job,
    cron_schedule="0 3 * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Rebuild the whole graph every day at 03:00 UTC.",
)

hourly_drift = ScheduleDefinition(
    name="hourly_drift_check",
    job=drift_check_job,
    cron_schedule="15 * * * *",
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every hour at :15, ingest and compare the champion with the latest window (drift + NDCG@10); the "
                "drift_retrain_sensor reads the result and launches retraining when a threshold is passed.",
)
