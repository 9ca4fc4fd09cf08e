"""The history assets, number_history (SCD2) and number_changes, per workspace partition.

They are materialized by the snapshot step (history is updated in each snapshot's own
transaction); this module says what they are and what their materializations report.
"""

from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import duckdb
import pandas as pd

from pipelines.charts import png_data_uri, utilization_png
from pipelines.snapshot import snapshot_id_for
from pipelines.warehouse.analytics import (
    changes_by_snapshot,
    utilization_over_time,
    workspace_figures,
)
from pipelines.warehouse.history import CHANGE_TYPES
from pipelines.warehouse.schema import columns

SNAPSHOTS_KEY = dg.AssetKey(["synthflow", "number_snapshots"])
HISTORY_KEY = dg.AssetKey(["synthflow", "number_history"])
CHANGES_KEY = dg.AssetKey(["synthflow", "number_changes"])
OWNERS = ["team:synthflow-numbers"]
KINDS = {"synthflow", "pandas", "duckdb"}

# The run's chart is rendered once and the same value (~25-60 kB) is attached to each of its
# history materializations; past this many workspaces the lines are no longer told apart and the
# copies swell the event log, so the chart is left out (the numeric metadata is still plotted).
CHART_LIMIT = 50


def column_schema(table: str) -> dg.TableSchema:
    """The table's columns as Dagster shows them, described where the schema is (`COMMENT ON`)."""
    return dg.TableSchema(
        columns=[
            dg.TableColumn(name, data_type, description=description or "")
            for name, data_type, description in columns(table)
        ]
    )


HISTORY_SCHEMA = column_schema("number_history")
CHANGES_SCHEMA = column_schema("number_changes")


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


@dataclass(frozen=True)
class RunHistory:
    """What the history materializations of a run report, read from DuckDB at once."""

    figures: dict[str, tuple[int, int, int]]  # workspace: versions, current numbers, changes
    changes_in_run: dict[str, dict[str, int]]  # workspace: count per change type, zeros too
    utilization: pd.DataFrame | None  # the chart's lines; None past CHART_LIMIT workspaces


def charted(workspaces: int) -> bool:
    """Whether the history materializations of a run of this many workspaces carry the chart."""
    return 0 < workspaces <= CHART_LIMIT


def read_run_history(
    con: duckdb.DuckDBPyConnection, workspace_ids: list[str], run_id: str
) -> RunHistory:
    """The queries behind `history_materializations`, a few for the whole run."""
    figures = workspace_figures(con, workspace_ids)
    workspace_of = {
        snapshot_id_for(workspace_id, run_id): workspace_id for workspace_id in workspace_ids
    }
    changes_in_run = {
        workspace_id: dict.fromkeys(CHANGE_TYPES, 0) for workspace_id in workspace_ids
    }
    for snapshot_id, kind, count in changes_by_snapshot(con, list(workspace_of)):
        changes_in_run[workspace_of[snapshot_id]][kind] = count
    utilization = (
        utilization_over_time(con, workspace_ids).frame() if charted(len(workspace_ids)) else None
    )
    return RunHistory(figures, changes_in_run, utilization)


def history_materializations(history: RunHistory) -> Iterator[dg.AssetMaterialization]:
    """Per workspace: the table sizes and the changes its snapshot in this run recorded; on
    history also the run's utilization chart (runs of at most CHART_LIMIT workspaces)."""
    workspaces = len(history.changes_in_run)
    chart = (
        {}
        if history.utilization is None
        else {"utilization_chart": _run_chart(history.utilization, workspaces)}
    )
    for workspace_id, in_run in history.changes_in_run.items():  # in the run's order
        versions, current, changes = history.figures[workspace_id]
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
                **chart,
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


def _run_chart(utilization: pd.DataFrame, workspaces: int) -> dg.MarkdownMetadataValue:
    """One figure for the run: a line of assigned share over time per workspace."""
    title = f"Assigned share, the {workspaces} workspace(s) of this run"
    png = utilization_png(utilization, title=title, size=(7.5, 3))
    return dg.MetadataValue.md(f"![assigned share over time]({png_data_uri(png)})")
