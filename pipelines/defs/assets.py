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
    HISTORY_CHECK_DESCRIPTIONS,
    HISTORY_KEY,
    KINDS,
    OWNERS,
    SNAPSHOTS_KEY,
    history_materializations,
    history_specs,
    read_run_history,
)
from pipelines.defs.resources import SynthflowResource, WarehouseResource
from pipelines.snapshot import Progress, WorkspaceOutcome, snapshot_id_for, take_snapshots
from pipelines.warehouse.checks import HISTORY_CHECKS, SNAPSHOT_CHECKS, failing_rows
from pipelines.warehouse.store import checkpoint

SNAPSHOT_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("snapshot_id", "VARCHAR", description="unique per workspace snapshot"),
        dg.TableColumn("workspace_id", "VARCHAR"),
        dg.TableColumn("taken_at", "TIMESTAMPTZ", description="first page requested, UTC"),
        dg.TableColumn("number", "VARCHAR", description="E.164"),
        dg.TableColumn("sid", "VARCHAR", description="carrier ID; NULL for custom numbers"),
        dg.TableColumn("is_available", "BOOLEAN", description="not assigned to an inbound agent"),
        dg.TableColumn("country", "VARCHAR", description="ISO 3166-1 alpha-2, phonenumbers"),
    ]
)
CHECK_DESCRIPTIONS = {
    "row_count_matches_total": "Each stored snapshot holds exactly total_records numbers.",
    "numbers_unique": "No number appears twice in one snapshot.",
    "numbers_are_e164": "Every stored number is in E.164 form (+ and 2 to 15 digits).",
}


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
    checks = [(SNAPSHOTS_KEY, name, query, snapshot_ids) for name, query in SNAPSHOT_CHECKS.items()]
    checks += [(HISTORY_KEY, name, query, workspace_ids) for name, query in HISTORY_CHECKS.items()]
    with con:
        return [
            (asset_key, name, len(scope), failing_rows(con, query, scope))
            for asset_key, name, query, scope in checks
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
            dg.AssetCheckSpec(name, asset=SNAPSHOTS_KEY, description=text)
            for name, text in CHECK_DESCRIPTIONS.items()
        ]
        + [
            dg.AssetCheckSpec(name, asset=HISTORY_KEY, description=text)
            for name, text in HISTORY_CHECK_DESCRIPTIONS.items()
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
                checked = background.submit(_failing_rows, con.cursor(), stored_ids, snapshot_ids)
                history = read_run_history(con, stored_ids, run_id)
                # Queued after the reporting's own queries: a checkpoint holds new ones back.
                checkpointed = background.submit(checkpoint, con.cursor())
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
