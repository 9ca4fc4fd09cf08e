"""The snapshot step: one partition per workspace, one run for any number of them.

The step reads the partitions it was given, calls `take_snapshots`, and reports each stored
workspace as its own materialization of the snapshots, history and changes assets, so the UI
shows every workspace's metadata (and a failed workspace as failed) even when one run covers
them all. History is updated in the same transaction as each snapshot, so it is reported by
the same step.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import duckdb

from pipelines.config import ScheduleSettings
from pipelines.defs.dead_runs import PROCESS_TAG, process_identity
from pipelines.defs.history import (
    HISTORY_KEY,
    KINDS,
    OWNERS,
    SNAPSHOTS_KEY,
    column_schema,
    history_materializations,
    history_specs,
    read_run_history,
)
from pipelines.defs.resources import SynthflowResource, WarehouseResource
from pipelines.snapshot import Progress, WorkspaceOutcome, snapshot_id_for, take_snapshots
from pipelines.warehouse.checks import HISTORY_CHECKS, SNAPSHOT_CHECKS, failing_rows
from pipelines.warehouse.store import checkpoint

SNAPSHOT_SCHEMA = column_schema("number_snapshots")
CHECKS_BY_ASSET = ((SNAPSHOTS_KEY, SNAPSHOT_CHECKS), (HISTORY_KEY, HISTORY_CHECKS))


def _materialization(outcome: WorkspaceOutcome) -> dg.AssetMaterialization:
    snapshot = outcome.snapshot
    assert snapshot is not None
    return dg.AssetMaterialization(
        asset_key=SNAPSHOTS_KEY,
        partition=snapshot.workspace_id,
        metadata={
            "numbers": snapshot.row_count,
            "available": outcome.available,
            "assigned": snapshot.row_count - outcome.available,
            "assigned_share": round(
                (snapshot.row_count - outcome.available) / snapshot.row_count, 4
            )
            if snapshot.row_count
            else 0.0,
            "pages": snapshot.page_count,
            "requests": outcome.requests,
            "retries": outcome.retries,
            "seconds": round(outcome.seconds, 3),
            "numbers_not_e164": len(outcome.not_e164),
            "snapshot_id": snapshot.snapshot_id,
            "taken_at": dg.MetadataValue.timestamp(snapshot.taken_at),
            **{f"changes_{kind}": count for kind, count in sorted(outcome.changes.items())},
            "dagster/row_count": snapshot.row_count,
            "dagster/table_name": "synthflow.number_snapshots",
            "dagster/column_schema": SNAPSHOT_SCHEMA,
        },
    )


def _failing_rows(
    con: duckdb.DuckDBPyConnection, workspace_ids: list[str], snapshot_ids: list[str]
) -> list[tuple[dg.AssetKey, str, int, list[tuple]]]:
    """(asset, check, how many were checked, failing rows) for every check of the run."""
    checks = [(SNAPSHOTS_KEY, check, snapshot_ids) for check in SNAPSHOT_CHECKS]
    checks += [(HISTORY_KEY, check, workspace_ids) for check in HISTORY_CHECKS]
    return [
        (asset_key, check.name, len(scope), failing_rows(con, check, scope))
        for asset_key, check, scope in checks
    ]


def _check_results(
    checked: list[tuple[dg.AssetKey, str, int, list[tuple]]],
) -> Iterator[dg.AssetCheckResult]:
    for asset_key, name, scope, rows in checked:
        yield dg.AssetCheckResult(
            check_name=name,
            asset_key=asset_key,
            passed=not rows,
            metadata={
                "checked": scope,
                "failing_rows": len(rows),
                "examples": dg.MetadataValue.text("\n".join(map(str, rows[:20]))),
            },
        )


def build_snapshot_assets(
    partitions: dg.PartitionsDefinition, schedule: ScheduleSettings
) -> dg.AssetsDefinition:
    """One step per run: snapshots, then history and changes, reported per workspace."""

    @dg.multi_asset(
        name="synthflow_snapshot",
        specs=[
            dg.AssetSpec(
                SNAPSHOTS_KEY,
                description=(
                    "Complete point-in-time listings of each workspace's phone numbers from "
                    "Synthflow's GET /v2/numbers, verified against total_records, stored in "
                    "DuckDB with the number history brought up to date in the same transaction."
                ),
                partitions_def=partitions,
                kinds=KINDS,
                owners=OWNERS,
                group_name="synthflow",
                skippable=True,
                metadata={
                    "dagster/column_schema": SNAPSHOT_SCHEMA,
                    "dagster/table_name": "synthflow.number_snapshots",
                },
                # Late when the newest snapshot is older than two schedule intervals.
                freshness_policy=dg.FreshnessPolicy.time_window(
                    fail_window=2 * schedule.interval()
                ),
            ),
            *history_specs(partitions),
        ],
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool="duckdb",
        check_specs=[
            dg.AssetCheckSpec(check.name, asset=asset_key, description=check.description)
            for asset_key, checks in CHECKS_BY_ASSET
            for check in checks
        ],
    )
    def synthflow_snapshot(
        context: dg.AssetExecutionContext,
        synthflow: SynthflowResource,
        warehouse: WarehouseResource,
        progress: dg.ResourceParam[Progress],
    ):
        # Before anything else: if this process dies, the next run knows the slot is free.
        if context.run.tags.get(PROCESS_TAG) != (identity := process_identity()):
            context.instance.add_run_tags(context.run.run_id, {PROCESS_TAG: identity})
        settings = synthflow.settings()
        workspaces = list(settings.select(list(context.partition_keys)))
        run_id = context.run.root_run_id or context.run.run_id
        # The connection is held across the stores, so the database stays open after them and
        # their checkpoint is not DuckDB's at close but the one below, beside the reporting.
        with warehouse.connect() as con:
            outcomes = take_snapshots(
                workspaces,
                api_key=synthflow.api_key_for,
                fetch=settings.fetch,
                connect=warehouse.connect,
                run_id=run_id,
                progress=progress,
            )
            stored = [outcome for outcome in outcomes if outcome.snapshot is not None]
            stored_ids = [outcome.workspace.id for outcome in stored]
            snapshot_ids = [snapshot_id_for(workspace_id, run_id) for workspace_id in stored_ids]
            # The checks (queries over every stored row) and then the checkpoint (writing the
            # run's stores into the file) are DuckDB work: they run in a thread, on their own
            # cursors, while Dagster records the materializations (Python work) beside them.
            with ThreadPoolExecutor(max_workers=1) as background:
                checked = background.submit(_failing_rows, con, stored_ids, snapshot_ids)
                history = read_run_history(con, stored_ids, run_id)
                # Queued after the reporting's own queries: a checkpoint holds new ones back.
                checkpointed = background.submit(checkpoint, con)
                for outcome in stored:
                    yield _materialization(outcome)
                yield from history_materializations(history)
                yield from _check_results(checked.result())
                checkpointed.result()
        failures = [outcome for outcome in outcomes if not outcome.succeeded]
        if failures:
            raise dg.Failure(
                description=(
                    f"{len(failures)} of {len(outcomes)} workspace(s) failed and stored nothing: "
                    + "; ".join(str(outcome.error) for outcome in failures)
                ),
                metadata={outcome.workspace.id: str(outcome.error) for outcome in failures},
                allow_retries=False,
            )

    return synthflow_snapshot
