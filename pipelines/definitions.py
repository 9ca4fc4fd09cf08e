"""The code location: `dagster dev` at the project root loads `defs` from here."""

import dagster as dg

from pipelines.config import DEFAULT_KEY_VARIABLE, Settings, load_settings
from pipelines.defs.assets import build_snapshot_assets
from pipelines.defs.dead_runs import build_dead_run_sensor
from pipelines.defs.resources import SynthflowResource, WarehouseResource
from pipelines.defs.schedules import build_snapshot_schedule
from pipelines.defs.sensors import build_failure_sensor
from pipelines.snapshot import Progress

SNAPSHOT_JOB = "snapshot_job"


def build_definitions(settings: Settings, progress: Progress | None = None) -> dg.Definitions:
    """Assets, checks, job, schedule and resources for the configured workspaces."""
    partitions = dg.StaticPartitionsDefinition(settings.workspace_ids)
    assets = [build_snapshot_assets(partitions, settings.schedule)]
    job = dg.define_asset_job(SNAPSHOT_JOB, selection=assets)
    needs_default_key = any(ws.api_key_env == DEFAULT_KEY_VARIABLE for ws in settings.workspaces)
    return dg.Definitions(
        assets=assets,
        jobs=[job],
        schedules=[build_snapshot_schedule(SNAPSHOT_JOB, partitions, settings.schedule)],
        sensors=[build_failure_sensor(job, settings.alerts), build_dead_run_sensor()],
        resources={
            "synthflow": SynthflowResource(
                api_key=dg.EnvVar(DEFAULT_KEY_VARIABLE) if needs_default_key else None,
                config_file=str(settings.config_path) if settings.config_path else None,
            ),
            "warehouse": WarehouseResource(
                path=str(settings.duckdb_path),
                lock_timeout_s=settings.database.lock_timeout_s,
            ),
            "progress": progress or Progress(),
        },
    )


defs = build_definitions(load_settings())
