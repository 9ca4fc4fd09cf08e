"""Each workspace's lateness on its own: the check workspace_fresh, per partition.

A workspace is late when its newest snapshot is older than two schedule intervals, or when it
has none, whatever the other workspaces do (Dagster 1.13's freshness policy judges the asset by
its newest partition). The sensor reads the newest snapshot times from DuckDB once a minute and
reports the check for each workspace that turned late or fresh, or has a new snapshot (which
Dagster shows unchecked until the check names it), and nothing more: a thousand workspaces cost
events once a run, outside it. Each workspace that turns late is announced once. The same
check runs on demand from the UI.
"""

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg

from pipelines.alerts import post_alert
from pipelines.config import ScheduleSettings, Settings
from pipelines.defs.history import SNAPSHOTS_KEY, newest_materializations
from pipelines.defs.resources import WarehouseResource
from pipelines.warehouse.analytics import newest_snapshot_times
from pipelines.warehouse.connection import DatabaseLockedError, DatabaseUnusableError

FRESH_CHECK = "workspace_fresh"
TICK_S = 60
# A tick waits this long for a run that writes the file, then leaves the check to the next one.
READ_WAIT_S = 5.0
LISTED = 20  # workspaces named in one alert; the rest are counted


def _newest_snapshots(
    warehouse: WarehouseResource, workspace_ids: list[str], lock_timeout_s: float | None = None
) -> dict[str, datetime | None]:
    with warehouse.connect(read_only=True, lock_timeout_s=lock_timeout_s) as con:
        newest = newest_snapshot_times(con, workspace_ids)
    return {workspace_id: newest.get(workspace_id) for workspace_id in workspace_ids}


def _is_late(newest: datetime | None, window: timedelta, now: datetime) -> bool:
    return newest is None or now - newest > window


def _evaluations(
    instance: dg.DagsterInstance,
    newest: dict[str, datetime | None],
    window: timedelta,
    now: datetime,
) -> Iterator[dg.AssetCheckEvaluation]:
    """workspace_fresh for these workspaces at `now`, each on its newest materialization."""
    checked = newest_materializations(instance, list(newest))
    for workspace_id, taken_at in newest.items():
        yield dg.AssetCheckEvaluation(
            asset_key=SNAPSHOTS_KEY,
            check_name=FRESH_CHECK,
            partition=workspace_id,
            passed=not _is_late(taken_at, window, now),
            target_materialization_data=checked.get(workspace_id),
            metadata={
                "newest_snapshot": (
                    dg.MetadataValue.timestamp(taken_at)
                    if taken_at
                    else dg.MetadataValue.text("none")
                ),
                "late_after_hours": round(window.total_seconds() / 3600, 2),
            },
        )


def _late_alert(settings: Settings, late: list[str]) -> str:
    labels = settings.labels
    listed = ", ".join(labels[workspace_id] for workspace_id in late[:LISTED])
    more = f" and {len(late) - LISTED} more" if len(late) > LISTED else ""
    hours = settings.schedule.late_after().total_seconds() / 3600
    text = (
        f"synthflow-numbers: {len(late)} workspace(s) turned late, no snapshot in the last "
        f"{hours:g} h: {listed}{more}."
    )
    if settings.alerts.dagster_url:
        text += f" {settings.alerts.dagster_url}/assets/{'/'.join(SNAPSHOTS_KEY.path)}?view=checks"
    return text


def build_freshness_check(
    partitions: dg.PartitionsDefinition, schedule: ScheduleSettings
) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=SNAPSHOTS_KEY,
        name=FRESH_CHECK,
        partitions_def=partitions,
        pool="duckdb",  # run from the UI during a snapshot, it waits its turn, not a lock timeout
        description=f"This workspace's newest snapshot is at most {schedule.late_after()} old "
        "(two schedule intervals). Reported by the sensor workspace_lateness when it changes.",
    )
    def workspace_fresh(context: dg.AssetCheckExecutionContext, warehouse: WarehouseResource):
        newest = _newest_snapshots(warehouse, list(context.partition_keys))
        yield from _evaluations(context.instance, newest, schedule.late_after(), datetime.now(UTC))

    return workspace_fresh


def build_lateness_sensor(settings: Settings) -> dg.SensorDefinition:
    webhook_url = settings.alerts.webhook_url

    @dg.sensor(
        name="workspace_lateness",
        minimum_interval_seconds=TICK_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Once a minute: reports workspace_fresh for each workspace that turned late "
        "or fresh, or has a new snapshot, and posts the newly late ones to alerts.webhook_url "
        "when set.",
    )
    def workspace_lateness(context: dg.SensorEvaluationContext, warehouse: WarehouseResource):
        # Per workspace at the last tick: [late, newest snapshot time], as reported.
        reported: dict[str, list] = json.loads(context.cursor) if context.cursor else {}
        window = settings.schedule.late_after()
        try:
            newest = _newest_snapshots(warehouse, settings.workspace_ids, READ_WAIT_S)
        except DatabaseLockedError:
            return dg.SkipReason("a run is writing the database; the next tick checks")
        except DatabaseUnusableError as error:
            return dg.SkipReason(f"nothing to check yet: {error}")
        # One clock reading for the cursor, the alert and the evaluations alike.
        now = datetime.now(UTC)
        state = {
            wid: [_is_late(taken_at, window, now), taken_at and taken_at.isoformat()]
            for wid, taken_at in newest.items()
        }
        # A new snapshot is a new materialization: the check must name it again to stay shown.
        # A late workspace has no new snapshot: if it changed, it turned late.
        changed = {wid: newest[wid] for wid in state if reported.get(wid) != state[wid]}
        turned_late = [wid for wid in changed if state[wid][0]]
        if turned_late and webhook_url:
            post_alert(webhook_url, _late_alert(settings, turned_late))
        return dg.SensorResult(
            asset_events=list(_evaluations(context.instance, changed, window, now)),
            cursor=json.dumps(state),
        )

    return workspace_lateness
