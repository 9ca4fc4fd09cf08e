"""The snapshot step: one partition per workspace, one run for any number of them.

It reads the partitions it was given, calls `take_snapshots`, and reports each stored workspace
as its own materialization of number_snapshots, so the UI shows every workspace (and a failed one
as failed) even when one run covers them all; the history tables once, as whole tables.
"""

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import dagster as dg
import duckdb

from pipelines.config import ScheduleSettings
from pipelines.defs.dead_runs import PROCESS_TAG, process_tag
from pipelines.defs.history import (
    CHANGES_KEY,
    HISTORY_KEY,
    SNAPSHOTS_KEY,
    history_materializations,
    newest_materializations,
    table_spec,
)
from pipelines.defs.resources import SynthflowResource, WarehouseResource
from pipelines.snapshot import Progress, WorkspaceOutcome, take_snapshots
from pipelines.warehouse.analytics import table_sizes
from pipelines.warehouse.checkpoints import checkpoint
from pipelines.warehouse.checks import HISTORY_CHECKS, SNAPSHOT_CHECKS, failing_rows

CHECKS = {SNAPSHOTS_KEY: SNAPSHOT_CHECKS, HISTORY_KEY: HISTORY_CHECKS}
ALL_CHECKS = SNAPSHOT_CHECKS + HISTORY_CHECKS
# Each workspace's verdict over every check above: one event a workspace, where one per check
# would cost six (each event is ~10 ms of Dagster's storage on sqlite).
WORKSPACE_CHECK = "workspace_passes_checks"


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
            **({"region": workspace.region} if workspace.region else {}),
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


def _examples(rows: list[tuple]) -> dict[str, dg.MetadataValue]:
    """Up to 20 failing rows, only when there are any."""
    return {"examples": dg.MetadataValue.text("\n".join(map(str, rows[:20])))} if rows else {}


def _check_results(
    con: duckdb.DuckDBPyConnection, stored: list[WorkspaceOutcome]
) -> tuple[list[dg.AssetCheckResult], dict[str, dict[str, list[tuple]]]]:
    """Every check over the run (its snapshots, or its workspaces' history), and each
    workspace's failing rows by check. Every failing row is led by its workspace_id."""
    ids = [outcome.workspace.id for outcome in stored]
    scopes = {SNAPSHOTS_KEY: [outcome.snapshot.snapshot_id for outcome in stored], HISTORY_KEY: ids}
    failing: dict[str, dict[str, list[tuple]]] = {workspace_id: {} for workspace_id in ids}
    results = []
    for asset_key, checks in CHECKS.items():
        for check in checks:
            rows = failing_rows(con, check, scopes[asset_key])
            for row in rows:
                failing[row[0]].setdefault(check.name, []).append(row)
            workspaces = sorted({row[0] for row in rows})
            metadata = {
                "checked": len(scopes[asset_key]),
                "failing_rows": len(rows),
                "failing_workspaces": len(workspaces),
                **({"workspaces": ", ".join(workspaces)} if workspaces else {}),
                **_examples(rows),
            }
            results.append(
                dg.AssetCheckResult(
                    check_name=check.name, asset_key=asset_key, passed=not rows, metadata=metadata
                )
            )
    return results, failing


def _workspace_verdicts(
    instance: dg.DagsterInstance,
    stored: list[WorkspaceOutcome],
    failing: dict[str, dict[str, list[tuple]]],
) -> Iterator[dg.AssetCheckEvaluation]:
    """Each stored workspace's verdict over every check, on its materialization of this run."""
    checked = newest_materializations(instance, list(failing))
    for outcome in stored:
        checks_failed = failing[outcome.workspace.id]
        rows = [row for check_rows in checks_failed.values() for row in check_rows]
        yield dg.AssetCheckEvaluation(
            asset_key=SNAPSHOTS_KEY,
            check_name=WORKSPACE_CHECK,
            partition=outcome.workspace.id,
            passed=not rows,
            target_materialization_data=checked.get(outcome.workspace.id),
            metadata={
                "snapshot_id": outcome.snapshot.snapshot_id,
                "checks_run": len(ALL_CHECKS),
                "failing_rows": len(rows),
                "failing_checks": ", ".join(checks_failed) or "none",
                **_examples(rows),
            },
        )


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
                # The table is late when no workspace has a snapshot within the window (each
                # workspace on its own: the check workspace_fresh).
                freshness_policy=dg.FreshnessPolicy.time_window(fail_window=schedule.late_after()),
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
            *(
                dg.AssetCheckSpec(check.name, asset=asset_key, description=check.description)
                for asset_key, checks in CHECKS.items()
                for check in checks
            ),
            dg.AssetCheckSpec(
                WORKSPACE_CHECK,
                asset=SNAPSHOTS_KEY,
                partitions_def=partitions,
                description="This workspace's snapshot and history pass every check: "
                + ", ".join(check.name for check in ALL_CHECKS)
                + ". The metadata names the checks it fails and their first failing rows.",
            ),
        ],
    )
    def synthflow_snapshot(
        context: dg.AssetExecutionContext,
        synthflow: SynthflowResource,
        warehouse: WarehouseResource,
        progress: dg.ResourceParam[Progress],
    ):
        # Before anything else: if this process dies, the next run knows the slot is free.
        if context.run.tags.get(PROCESS_TAG) != (tag := process_tag(context.run.run_id)):
            context.instance.add_run_tags(context.run.run_id, {PROCESS_TAG: tag})
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
            # The checks and the checkpoint are DuckDB work: they run in a thread, on cursors of
            # their own, while Dagster records the materializations (Python work).
            with ThreadPoolExecutor(max_workers=1) as background:
                checked = background.submit(_check_results, con, stored)
                table_rows, *history_sizes = table_sizes(con)
                # Queued after the reporting's own queries: a checkpoint holds new ones back.
                checkpointed = background.submit(checkpoint, con)
                yield from (_materialization(outcome, table_rows) for outcome in stored)
                yield from history_materializations(stored, history_sizes)
                run_results, failing = checked.result()
                yield from run_results
                yield from _workspace_verdicts(context.instance, stored, failing)
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
