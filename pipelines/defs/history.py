"""The tables the snapshot step materializes, and what the history ones report.

number_history (SCD2) and number_changes are brought up to date in each snapshot's own
transaction, so the snapshot step reports them too: once a run each, as whole tables. Only
number_snapshots has a partition per workspace: every event a workspace adds is a few writes to
Dagster's storage (~15 ms on sqlite, planned and materialized), and a workspace's own figures,
the changes its snapshot recorded among them, are on its snapshot.
"""

from collections.abc import Iterator

import dagster as dg

# Not exported by Dagster 1.13: per-partition check evaluations (a preview) are current in the
# UI only when they name the materialization they checked, which no public helper finds for them.
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData as CheckedMaterialization,
)

from pipelines.snapshot import WorkspaceOutcome
from pipelines.warehouse.history import CHANGE_TYPES
from pipelines.warehouse.schema import columns, table_description

SNAPSHOTS_KEY = dg.AssetKey(["synthflow", "number_snapshots"])
HISTORY_KEY = dg.AssetKey(["synthflow", "number_history"])
CHANGES_KEY = dg.AssetKey(["synthflow", "number_changes"])


def _table_metadata(key: dg.AssetKey) -> dict[str, object]:
    """The asset's table and its columns, as the schema describes them (`COMMENT ON`)."""
    schema = dg.TableSchema(
        [dg.TableColumn(name, kind, description=text) for name, kind, text in columns(key.path[-1])]
    )
    return {"dagster/table_name": ".".join(key.path), "dagster/column_schema": schema}


TABLE_METADATA = {key: _table_metadata(key) for key in (SNAPSHOTS_KEY, HISTORY_KEY, CHANGES_KEY)}

# The number_snapshots columns each column of the history tables is derived from.
_SAME = ("workspace_id", "number")
DERIVED_FROM = {
    HISTORY_KEY: {
        **{column: [column] for column in (*_SAME, "is_available", "sid")},
        **{column: ["taken_at"] for column in ("valid_from", "valid_to", "is_current")},
    },
    CHANGES_KEY: {
        **{column: [column] for column in (*_SAME, "snapshot_id", "is_available")},
        **{column: ["taken_at"] for column in ("changed_at", "previous_taken_at")},
        "change_type": ["number", "is_available", "sid"],
        "was_available": ["is_available"],
    },
}
COLUMN_LINEAGE = {
    key: dg.TableColumnLineage(
        {
            column: [dg.TableColumnDep(SNAPSHOTS_KEY, source) for source in sources]
            for column, sources in derived.items()
        }
    )
    for key, derived in DERIVED_FROM.items()
}


def newest_materializations(
    instance: dg.DagsterInstance, workspace_ids: list[str]
) -> dict[str, CheckedMaterialization]:
    """The newest materialization of each workspace's snapshot partition, which its checks
    target: two queries however many workspaces (one each took 3 s at 1,000)."""
    storage_ids = instance.get_latest_storage_id_by_partition(
        SNAPSHOTS_KEY, dg.DagsterEventType.ASSET_MATERIALIZATION, set(workspace_ids)
    )
    if not storage_ids:
        return {}
    records_filter = dg.AssetRecordsFilter(SNAPSHOTS_KEY, storage_ids=list(storage_ids.values()))
    records = instance.fetch_materializations(records_filter, limit=len(storage_ids)).records
    return {
        record.partition_key: CheckedMaterialization(
            storage_id=record.storage_id, run_id=record.run_id, timestamp=record.timestamp
        )
        for record in records
    }


def table_spec(
    key: dg.AssetKey,
    partitions: dg.PartitionsDefinition | None = None,
    description: str | None = None,
    **more,
) -> dg.AssetSpec:
    """One table of the snapshot step, described as the schema describes it unless
    `description` says more."""
    return dg.AssetSpec(
        key,
        description=description or table_description(key.path[-1]),
        partitions_def=partitions,
        owners=["team:synthflow-numbers"],
        group_name="synthflow",
        skippable=True,
        metadata=TABLE_METADATA[key],
        **more,
    )


def history_materializations(
    stored: list[WorkspaceOutcome], sizes: tuple[int, int, int]
) -> Iterator[dg.AssetMaterialization]:
    """The history tables after the run stored these workspaces: their `sizes` (versions,
    current numbers, changes) and the changes the run recorded. Nothing when the run stored
    nothing."""
    if not stored:
        return
    in_run = {kind: sum(ws.changes.get(kind, 0) for ws in stored) for kind in CHANGE_TYPES}
    versions, current, changes = sizes
    yield dg.AssetMaterialization(
        HISTORY_KEY,
        metadata={
            "versions": versions,
            "current_numbers": current,
            "workspaces_in_run": len(stored),
            **{f"changes_{kind}": count for kind, count in in_run.items()},
            "dagster/row_count": versions,
            "dagster/column_lineage": COLUMN_LINEAGE[HISTORY_KEY],
        },
    )
    yield dg.AssetMaterialization(
        CHANGES_KEY,
        metadata={
            **in_run,
            "changes_in_run": sum(in_run.values()),
            "dagster/row_count": changes,
            "dagster/column_lineage": COLUMN_LINEAGE[CHANGES_KEY],
        },
    )
