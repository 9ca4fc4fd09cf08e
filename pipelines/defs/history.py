"""The history assets, number_history (SCD2) and number_changes, per workspace partition.

They are materialized by the snapshot step (history is updated in each snapshot's own
transaction); this module says what they are and what their materializations report.
"""

from collections.abc import Iterator

import dagster as dg
import duckdb

from pipelines.snapshot import snapshot_id_for
from pipelines.warehouse.history import CHANGE_TYPES

SNAPSHOTS_KEY = dg.AssetKey(["synthflow", "number_snapshots"])
HISTORY_KEY = dg.AssetKey(["synthflow", "number_history"])
CHANGES_KEY = dg.AssetKey(["synthflow", "number_changes"])
OWNERS = ["team:synthflow-numbers"]
KINDS = {"synthflow", "pandas", "duckdb"}
HISTORY_CHECK_DESCRIPTIONS = {
    "no_overlapping_versions": "Versions of one number in one workspace never overlap.",
    "one_open_version_per_number": "At most one open version per number; is_current agrees.",
    "changes_match_versions": "Every change event agrees with the versions before and after it.",
}

# A chart per workspace costs ~50 ms and ~15 kB of event log; past this many workspaces in one
# run the charts are left out (the numeric metadata is still plotted by the UI).
CHART_LIMIT = 50
HISTORY_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("workspace_id", "VARCHAR"),
        dg.TableColumn("number", "VARCHAR", description="E.164"),
        dg.TableColumn("is_available", "BOOLEAN", description="state during the version"),
        dg.TableColumn("sid", "VARCHAR", description="state during the version"),
        dg.TableColumn("valid_from", "TIMESTAMPTZ", description="taken_at that first showed it"),
        dg.TableColumn("valid_to", "TIMESTAMPTZ", description="taken_at that showed it ended"),
        dg.TableColumn("is_current", "BOOLEAN", description="valid_to IS NULL"),
    ]
)
CHANGES_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("workspace_id", "VARCHAR"),
        dg.TableColumn("number", "VARCHAR", description="E.164"),
        dg.TableColumn("changed_at", "TIMESTAMPTZ", description="taken_at that showed it"),
        dg.TableColumn("previous_taken_at", "TIMESTAMPTZ", description="the snapshot before"),
        dg.TableColumn("snapshot_id", "VARCHAR"),
        dg.TableColumn(
            "change_type", "VARCHAR", description="added, removed, assigned, released, sid_changed"
        ),
        dg.TableColumn("was_available", "BOOLEAN"),
        dg.TableColumn("is_available", "BOOLEAN"),
    ]
)

WORKSPACE_FIGURES = """
    SELECT
        (SELECT count(*) FROM synthflow.number_history WHERE workspace_id = $ws) AS versions,
        (SELECT count(*) FROM synthflow.number_history
         WHERE workspace_id = $ws AND valid_to IS NULL) AS current_numbers,
        (SELECT count(*) FROM synthflow.number_changes WHERE workspace_id = $ws) AS changes
"""
SNAPSHOT_CHANGES = """
    SELECT change_type, count(*) FROM synthflow.number_changes
    WHERE snapshot_id = $snapshot_id GROUP BY change_type
"""


def history_specs(partitions: dg.PartitionsDefinition) -> list[dg.AssetSpec]:
    common = {
        "deps": [SNAPSHOTS_KEY],
        "partitions_def": partitions,
        "kinds": {"synthflow", "duckdb"},
        "owners": OWNERS,
        "group_name": "synthflow",
        "skippable": True,
    }
    return [
        dg.AssetSpec(
            HISTORY_KEY,
            description="SCD type 2 versions of each number per workspace: when it was there, "
            "free or assigned, and with which SID.",
            metadata={
                "dagster/column_schema": HISTORY_SCHEMA,
                "dagster/table_name": "synthflow.number_history",
            },
            **common,
        ),
        dg.AssetSpec(
            CHANGES_KEY,
            description="One event per observed transition: added, removed, assigned, "
            "released, sid_changed.",
            metadata={
                "dagster/column_schema": CHANGES_SCHEMA,
                "dagster/table_name": "synthflow.number_changes",
            },
            **common,
        ),
    ]


def history_materializations(
    con: duckdb.DuckDBPyConnection, workspace_ids: list[str], run_id: str
) -> Iterator[dg.AssetMaterialization]:
    """Per workspace: the table sizes, the changes its snapshot in this run recorded and a chart
    of its assigned share over time."""
    charts = len(workspace_ids) <= CHART_LIMIT
    for workspace_id in workspace_ids:
        versions, current, changes = con.execute(WORKSPACE_FIGURES, {"ws": workspace_id}).fetchone()
        in_run = dict.fromkeys(CHANGE_TYPES, 0) | dict(
            con.execute(
                SNAPSHOT_CHANGES, {"snapshot_id": snapshot_id_for(workspace_id, run_id)}
            ).fetchall()
        )
        yield dg.AssetMaterialization(
            asset_key=HISTORY_KEY,
            partition=workspace_id,
            metadata={
                "versions": versions,
                "current_numbers": current,
                **{f"changes_{kind}": count for kind, count in in_run.items()},
                "dagster/row_count": versions,
                "dagster/table_name": "synthflow.number_history",
                "dagster/column_schema": HISTORY_SCHEMA,
                **({"utilization_chart": _chart(con, workspace_id)} if charts else {}),
            },
        )
        yield dg.AssetMaterialization(
            asset_key=CHANGES_KEY,
            partition=workspace_id,
            metadata={
                **in_run,
                "changes_in_run": sum(in_run.values()),
                "dagster/row_count": changes,
                "dagster/table_name": "synthflow.number_changes",
                "dagster/column_schema": CHANGES_SCHEMA,
            },
        )


def _chart(con: duckdb.DuckDBPyConnection, workspace_id: str) -> dg.MarkdownMetadataValue:
    # matplotlib is imported here, not at load: code servers and run workers start faster.
    from pipelines.charts import UTILIZATION_OVER_TIME, png_data_uri, utilization_png

    frame = con.execute(UTILIZATION_OVER_TIME, [[workspace_id]]).df()
    png = utilization_png(frame, title=f"Assigned share, {workspace_id}", size=(6, 2.6))
    return dg.MetadataValue.md(f"![assigned share over time]({png_data_uri(png)})")
