"""The snapshot schedule: one run per tick covering every configured workspace."""

import dagster as dg

from pipelines.config import ScheduleSettings

RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"


def all_partitions_tags(partitions: dg.StaticPartitionsDefinition) -> dict[str, str]:
    """Tags that make one run cover every workspace partition (single-run backfill policy)."""
    keys = partitions.get_partition_keys()
    return {RANGE_START: keys[0], RANGE_END: keys[-1]}


def build_snapshot_schedule(
    job_name: str, partitions: dg.StaticPartitionsDefinition, settings: ScheduleSettings
) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="snapshot_schedule",
        job_name=job_name,
        cron_schedule=settings.cron,
        execution_timezone=settings.timezone,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Snapshots every configured workspace in one run (cron: schedule.cron).",
    )
    def snapshot_schedule(context: dg.ScheduleEvaluationContext):
        if not partitions.get_partition_keys():
            return dg.SkipReason(
                "No workspaces are configured (synthflow.yaml or SYNTHFLOW_WORKSPACES)."
            )
        return dg.RunRequest(tags=all_partitions_tags(partitions))

    return snapshot_schedule
