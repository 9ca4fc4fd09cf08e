"""The code location: `dagster dev` at the project root loads `defs` from here."""

import dagster as dg

from pipelines.config import Settings, load_settings
from pipelines.config.values import DEFAULT_KEY_VARIABLE
from pipelines.defs.assets import build_snapshot_assets
from pipelines.defs.dead_runs import build_dead_run_sensor
from pipelines.defs.lateness import build_freshness_check, build_lateness_sensor
from pipelines.defs.resources import SynthflowResource, WarehouseResource
from pipelines.defs.schedules import build_snapshot_schedule
from pipelines.defs.sensors import build_alert_sensors
from pipelines.snapshot import Progress

SNAPSHOT_JOB = "snapshot_job"


def build_definitions(settings: Settings, progress: Progress | None = None) -> dg.Definitions:
    """Assets, checks, job, schedule and resources for the configured workspaces."""
    partitions = dg.StaticPartitionsDefinition(settings.workspace_ids)
    assets = [build_snapshot_assets(partitions, settings.schedule)]
    freshness_check = build_freshness_check(partitions, settings.schedule)
    # The snapshot step's own checks; freshness is the sensor's (or run from the UI on its own).
    job = dg.define_asset_job(
        SNAPSHOT_JOB,
        selection=dg.AssetSelection.assets(*assets).without_checks()
        | dg.AssetSelection.checks_for_assets(*assets) - dg.AssetSelection.checks(freshness_check),
    )
    needs_default_key = any(ws.api_key_env == DEFAULT_KEY_VARIABLE for ws in settings.workspaces)
    return dg.Definitions(
        assets=assets,
        asset_checks=[freshness_check],
        jobs=[job],
        # A run is one step: run it in the run worker, not a process of its own. The step's
        # process is then the one that ends the run, which is what release_dead_runs watches.
        executor=dg.in_process_executor,
        schedules=[build_snapshot_schedule(SNAPSHOT_JOB, partitions, settings.schedule)],
        sensors=[
            *build_alert_sensors(job, settings),
            build_lateness_sensor(settings),
            build_dead_run_sensor(),
        ],
        resources={
            "synthflow": SynthflowResource(
                api_key=dg.EnvVar(DEFAULT_KEY_VARIABLE) if needs_default_key else None,
                config_file=str(settings.config_path) if settings.config_path else None,
            ),
            # database.* are the resource's fields by name.
            "warehouse": WarehouseResource(
                path=str(settings.duckdb_path),
                ducklake_catalog=settings.ducklake and settings.ducklake.catalog,
                ducklake_data_path=settings.ducklake and settings.ducklake.data_path,
                **dict(settings.database),
            ),
            "progress": progress or Progress(),
        },
    )


defs = build_definitions(load_settings())
