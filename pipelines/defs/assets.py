"""The snapshot step: one partition per workspace, one run for any number of them.

It reads the partitions it was given, calls `take_snapshots`, and reports each stored workspace
as its own materialization of number_snapshots, so the UI shows every workspace (and a failed one
as failed) even when one run covers them all; the history tables once, as whole tables.
"""

from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import duckdb

from pipelines.config import ScheduleSettings
from pipelines.defs.dead_runs import PROCESS_TAG, process_identity
from pipelines.defs.history import (
    CHANGES_KEY,
    CHART_LIMIT,
    HISTORY_KEY,
    SNAPSHOTS_KEY,
    history_materializations,
    table_spec,
)
from pipelines.defs.resources import SynthflowResource, WarehouseResource
from pipelines.snapshot import Progress, WorkspaceOutcome, take_snapshots
from pipelines.warehouse.analytics import table_sizes, utilization_over_time
from pipelines.warehouse.checks import HISTORY_CHECKS, SNAPSHOT_CHECKS, failing_rows
from pipelines.warehouse.store import checkpoint

CHECKS = {SNAPSHOTS_KEY: SNAPSHOT_CHECKS, HISTORY_KEY: HISTORY_CHECKS}


def _materialization(outcome: WorkspaceOutcome, table_rows: int) -> dg.AssetMaterialization:
    snapshot, workspace = outcome.snapshot, outcome.workspace
    assert snapshot is not None
    assigned = snapshot.row_count - outcome.available
    share = round(assigned / snapshot.row_count, 4) if snapshot.row_count else 0.0
    return dg.AssetMaterialization(
        SNAPSHOTS_KEY,
        partition=snapshot.workspace_id,
        metadata={
            **({"workspace_name": workspace.name} if workspace.name else {}),
            "base_url": workspace.base_url,
            "numbers": snapshot.row_count,
            "available": outcome.available,
            "assigned": assigned,
            "assigned_share": share,
            "pages": snapshot.page_count,
            "requests": outcome.requests,
            "retries": outcome.retries,
            "seconds": round(outcome.seconds, 3),
            "numbers_not_e164": len(outcome.not_e164),
            "snapshot_id": snapshot.snapshot_id,
            "taken_at": dg.MetadataValue.timestamp(snapshot.taken_at),
            **{f"changes_{kind}": count for kind, count in sorted(outcome.changes.items())},
            "dagster/partition_row_count": snapshot.row_count,
            "dagster/row_count": table_rows,
        },
    )


def _check_results(
    con: duckdb.DuckDBPyConnection, scopes: dict[dg.AssetKey, list[str]]
) -> list[dg.AssetCheckResult]:
    """Every check of each asset over its scope: the run's snapshots, or its workspaces."""
    results = []
    for asset_key, checks in CHECKS.items():
        scope = scopes[asset_key]
        for check in checks:
            rows = failing_rows(con, check, scope)
            examples = dg.MetadataValue.text("\n".join(map(str, rows[:20])))
            metadata = {"checked": len(scope), "failing_rows": len(rows), "examples": examples}
            results.append(
                dg.AssetCheckResult(
                    check_name=check.name, asset_key=asset_key, passed=not rows, metadata=metadata
                )
            )
    return results


def build_snapshot_assets(
    partitions: dg.PartitionsDefinition, schedule: ScheduleSettings
) -> dg.AssetsDefinition:
    """One step per run: snapshots, then history and changes, reported per workspace."""

    @dg.multi_asset(
        name="synthflow_snapshot",
        specs=[
            table_spec(
                SNAPSHOTS_KEY,
                partitions,
                description="Complete point-in-time listings of each workspace's phone numbers "
                "from Synthflow's GET /v2/numbers, verified against total_records, stored in "
                "DuckDB with the number history brought up to date in the same transaction.",
                kinds={"synthflow", "pandas", "duckdb"},
                # Late when the newest snapshot is older than two schedule intervals.
                freshness_policy=dg.FreshnessPolicy.time_window(
                    fail_window=2 * schedule.interval()
                ),
            ),
            *(
                table_spec(key, deps=[SNAPSHOTS_KEY], kinds={"synthflow", "duckdb"})
                for key in (HISTORY_KEY, CHANGES_KEY)
            ),
        ],
        can_subset=True,  # required of specs partitioned apart; the job takes them all
        backfill_policy=dg.BackfillPolicy.single_run(),
        pool="duckdb",
        check_specs=[
            dg.AssetCheckSpec(check.name, asset=asset_key, description=check.description)
            for asset_key, checks in CHECKS.items()
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
        # Held across the stores, so the database stays open after them: their checkpoint is the
        # one below, beside the reporting, not DuckDB's at close.
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
            ids = [outcome.workspace.id for outcome in stored]
            snapshot_ids = [outcome.snapshot.snapshot_id for outcome in stored]
            # The checks and the checkpoint are DuckDB work: they run in a thread, on cursors of
            # their own, while Dagster records the materializations (Python work).
            with ThreadPoolExecutor(max_workers=1) as background:
                checked = background.submit(
                    _check_results, con, {SNAPSHOTS_KEY: snapshot_ids, HISTORY_KEY: ids}
                )
                table_rows, *history_sizes = table_sizes(con)
                charted = 0 < len(ids) <= CHART_LIMIT
                utilization = utilization_over_time(con, ids).frame() if charted else None
                # Queued after the reporting's own queries: a checkpoint holds new ones back.
                checkpointed = background.submit(checkpoint, con)
                yield from (_materialization(outcome, table_rows) for outcome in stored)
                yield from history_materializations(stored, history_sizes, utilization)
                yield from checked.result()
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
