"""What the analytics show, as rich tables: inventory, latest changes, utilization, moves."""

from __future__ import annotations

import duckdb
from rich.console import Group
from rich.table import Table

INVENTORY = """
    WITH workspaces AS (SELECT DISTINCT workspace_id FROM synthflow.snapshots)
    SELECT w.workspace_id, count(c.number) AS numbers,
           count(*) FILTER (WHERE c.is_available) AS available,
           count(*) FILTER (WHERE NOT c.is_available) AS assigned,
           count(*) FILTER (WHERE c.number IS NOT NULL AND c.sid IS NULL) AS custom,
           string_agg(DISTINCT coalesce(c.country, '?'), ' ' ORDER BY coalesce(c.country, '?'))
               FILTER (WHERE c.number IS NOT NULL) AS countries
    FROM workspaces w
    LEFT JOIN synthflow.current_numbers c USING (workspace_id)
    GROUP BY w.workspace_id
    ORDER BY w.workspace_id
"""
LATEST_CHANGES = """
    SELECT workspace_id, changed_at, change_type, number, was_available, is_available
    FROM synthflow.number_changes
    QUALIFY row_number() OVER (
        PARTITION BY workspace_id ORDER BY changed_at DESC, change_type, number
    ) <= $per_workspace
    ORDER BY workspace_id, changed_at DESC, change_type, number
"""
CHANGE_COUNTS = """
    SELECT workspace_id, change_type, count(*) AS changes
    FROM synthflow.number_changes
    GROUP BY ALL
    ORDER BY workspace_id, change_type
"""
UTILIZATION = """
    SELECT workspace_id, taken_at, total, available, assigned, assigned_share
    FROM synthflow.workspace_utilization
    ORDER BY workspace_id, taken_at
"""
MOVES = """
    SELECT number, from_workspace_id, to_workspace_id, window_start, window_end
    FROM synthflow.number_moves
    ORDER BY window_end, number
"""


def _table(con: duckdb.DuckDBPyConnection, title: str, query: str, **params: object) -> Table:
    result = con.execute(query, params or None)
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in result.description:
        table.add_column(column[0])
    rows = result.fetchall()
    for row in rows:
        table.add_row(*("" if value is None else _text(value) for value in row))
    if not rows:
        table.add_row(*(["(none)"] + [""] * (len(result.description) - 1)))
    return table


def _text(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.0%}" if 0 <= value <= 1 else f"{value:g}"
    if hasattr(value, "isoformat"):
        return value.strftime("%Y-%m-%d %H:%M:%S")  # type: ignore[attr-defined]
    return str(value)


def build_report(con: duckdb.DuckDBPyConnection, *, changes_per_workspace: int = 10) -> Group:
    """The whole report for the terminal."""
    return Group(
        _table(con, "Current inventory per workspace", INVENTORY),
        _table(con, "Changes recorded, by type", CHANGE_COUNTS),
        _table(
            con,
            f"Latest changes (up to {changes_per_workspace} per workspace)",
            LATEST_CHANGES,
            per_workspace=changes_per_workspace,
        ),
        _table(con, "Utilization per snapshot", UTILIZATION),
        _table(con, "Numbers that moved between workspaces", MOVES),
    )
