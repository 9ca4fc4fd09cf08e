"""Alerts about each finished snapshot run: a failed run, and the workspaces that failed a check.

One message a run at most, to the configured Slack-compatible webhook: a failed run names its
failure and any workspace that failed a check; a run that succeeded is announced only when a
workspace failed a check. Both sensors run by default only when a webhook URL is configured.
"""

import dagster as dg

from pipelines.alerts import post_alert
from pipelines.config import Settings
from pipelines.defs.assets import WORKSPACE_CHECK
from pipelines.defs.history import SNAPSHOTS_KEY

# Each run status that can call for an alert: its sensor's name, and when that one posts.
SENSORS = {
    dg.DagsterRunStatus.FAILURE: (
        "snapshot_failure_alert",
        "a snapshot run fails, naming the failure and any workspace that failed a check",
    ),
    dg.DagsterRunStatus.SUCCESS: (
        "failed_check_alert",
        "a snapshot run succeeds with a workspace that failed a check, naming it",
    ),
}


def _failed_checks(instance: dg.DagsterInstance, run_id: str, names: dict[str, str]) -> list[str]:
    """Each workspace of the run that failed a check, by name, with the checks it failed."""
    entries = instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
    return [
        f"{names.get(evaluation.partition, evaluation.partition)} "
        f"({evaluation.metadata['failing_checks'].value})"
        for evaluation in (entry.asset_check_evaluation for entry in entries)
        if evaluation.asset_key == SNAPSHOTS_KEY
        and evaluation.check_name == WORKSPACE_CHECK
        and not evaluation.passed
    ]


def _reason(step_failure: dg.DagsterEvent) -> str:
    """What the step said when it failed: the Failure's description, else the error."""
    data = step_failure.step_failure_data
    return data.user_failure_data.description if data.user_failure_data else data.error.message


def build_alert_sensors(job, settings: Settings) -> list[dg.SensorDefinition]:
    """One sensor per run status that can call for an alert, watching the runs of `job`."""
    webhook_url, dagster_url = settings.alerts.webhook_url, settings.alerts.dagster_url
    status = dg.DefaultSensorStatus.RUNNING if webhook_url else dg.DefaultSensorStatus.STOPPED

    def build(run_status: dg.DagsterRunStatus, name: str, when: str) -> dg.SensorDefinition:
        @dg.run_status_sensor(
            run_status=run_status,
            name=name,
            # Runs of `synthflow-numbers snapshot` (in process, with DAGSTER_HOME set) belong to
            # no code location: only a sensor that watches all of them sees those runs too.
            monitor_all_code_locations=True,
            description=f"Posts to alerts.webhook_url (or SYNTHFLOW_ALERT_WEBHOOK_URL) when "
            f"{when}; stopped when no URL is configured.",
            default_status=status,
        )
        def alert(context: dg.RunStatusSensorContext):
            if not webhook_url:
                return dg.SkipReason("no alerts.webhook_url configured")
            run = context.dagster_run
            if run.job_name != job.name:
                return dg.SkipReason(f"run {run.run_id[:8]} is of {run.job_name}, not {job.name}")
            parts = []
            if run_status == dg.DagsterRunStatus.FAILURE:
                reasons = [
                    _reason(event) for event in context.for_run_failure().get_step_failure_events()
                ]
                reason = " ".join(reasons) or context.dagster_event.message or "no reason recorded"
                parts.append(f"run {run.run_id[:8]} of {run.job_name} failed. {reason}")
            if failing := _failed_checks(context.instance, run.run_id, settings.labels):
                parts.append(
                    f"{len(failing)} workspace(s) failed a check of {'/'.join(SNAPSHOTS_KEY.path)} "
                    f"in run {run.run_id[:8]}: {'; '.join(failing)}."
                )
            if not parts:
                return dg.SkipReason(f"run {run.run_id[:8]}: every workspace passed its checks")
            link = f" {dagster_url}/runs/{run.run_id}" if dagster_url else ""
            post_alert(webhook_url, "synthflow-numbers: " + " ".join(parts) + link)

        return alert

    return [build(run_status, *sensor) for run_status, sensor in SENSORS.items()]
