"""The run-failure sensor: a short message to the configured webhook when a snapshot run fails."""

import dagster as dg

from pipelines.alerts import post_alert
from pipelines.config import AlertSettings


def build_failure_sensor(job, alerts: AlertSettings) -> dg.SensorDefinition:
    """Watches `job`; running by default only when a webhook URL is configured."""
    webhook_url = alerts.webhook_url
    status = dg.DefaultSensorStatus.RUNNING if webhook_url else dg.DefaultSensorStatus.STOPPED

    @dg.run_failure_sensor(
        name="snapshot_failure_alert",
        monitored_jobs=[job],
        description="Posts a short message to alerts.webhook_url (or SYNTHFLOW_ALERT_WEBHOOK_URL) "
        "when a snapshot run fails; stopped when no URL is configured.",
        default_status=status,
    )
    def snapshot_failure_alert(context: dg.RunFailureSensorContext):
        if not webhook_url:
            return dg.SkipReason("no alerts.webhook_url configured")
        run = context.dagster_run
        reason = context.failure_event.message or "no reason recorded"
        text = f"synthflow-numbers: run {run.run_id[:8]} of {run.job_name} failed. {reason}"
        post_alert(webhook_url, text)

    return snapshot_failure_alert
