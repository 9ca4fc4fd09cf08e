"""What the report, Dagster's metadata and analysts ask of the warehouse: each question one query.

Answers come back as plain rows with their column names, so whoever shows them (rich tables,
the HTML page, the chart, Dagster metadata, `query`'s output) never touches DuckDB.
"""

from dataclasses import dataclass

import duckdb
import pandas as pd

from pipelines.user_errors import UserError

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
LARGEST_WORKSPACES = """
    SELECT workspace_id FROM synthflow.current_numbers
    GROUP BY workspace_id ORDER BY count(*) DESC, workspace_id LIMIT ?
"""
# list_contains, not IN (subquery): DuckDB pushes it into the view, so only these workspaces'
# snapshots are aggregated.
UTILIZATION_OVER_TIME = """
    SELECT workspace_id, taken_at, assigned_share
    FROM synthflow.workspace_utilization
    WHERE list_contains(?::VARCHAR[], workspace_id)
    ORDER BY workspace_id, taken_at
"""
TABLE_SIZES = """
    SELECT (SELECT count(*) FROM synthflow.number_snapshots),
           count(*), count(*) FILTER (WHERE valid_to IS NULL),
           (SELECT count(*) FROM synthflow.number_changes)
    FROM synthflow.number_history
"""


@dataclass(frozen=True)
class Rows:
    """A query's answer: its column names and rows, values as Python gives them."""

    columns: list[str]
    rows: list[tuple]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=self.columns)


class QueryError(UserError):
    """An analyst's query that DuckDB refused; its message says why."""


def _rows(con: duckdb.DuckDBPyConnection, query: str, params: object = None) -> Rows:
    with con.cursor() as cursor:
        result = cursor.execute(query, params)
        if result.description is None:  # a statement that returns nothing, such as SET
            return Rows([], [])
        return Rows([column[0] for column in result.description], result.fetchall())


def ask(con: duckdb.DuckDBPyConnection, sql: str) -> Rows:
    """An analyst's own SQL (on a read-only connection, it can change nothing)."""
    try:
        return _rows(con, sql)
    except duckdb.Error as error:
        raise QueryError(
            f"the query failed: {error}. The tables, views and macros are in schema synthflow; "
            "list them with: synthflow-numbers query 'SHOW ALL TABLES'"
        ) from None


def report_sections(
    con: duckdb.DuckDBPyConnection, changes_per_workspace: int
) -> list[tuple[str, Rows]]:
    """(title, Rows) of each section of the report, in order."""
    return [
        ("Current inventory per workspace", _rows(con, INVENTORY)),
        ("Changes recorded, by type", _rows(con, CHANGE_COUNTS)),
        (
            f"Latest changes (up to {changes_per_workspace} per workspace)",
            _rows(con, LATEST_CHANGES, {"per_workspace": changes_per_workspace}),
        ),
        ("Utilization per snapshot", _rows(con, UTILIZATION)),
        ("Numbers that moved between workspaces", _rows(con, MOVES)),
    ]


def largest_workspaces(con: duckdb.DuckDBPyConnection, limit: int) -> list[str]:
    """The workspaces with the most numbers now, at most `limit`."""
    return [workspace_id for (workspace_id,) in _rows(con, LARGEST_WORKSPACES, [limit]).rows]


def utilization_over_time(con: duckdb.DuckDBPyConnection, workspace_ids: list[str]) -> Rows:
    """Assigned share of these workspaces at each of their snapshots."""
    return _rows(con, UTILIZATION_OVER_TIME, [workspace_ids])


def table_sizes(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int, int]:
    """Rows of number_snapshots; versions and current numbers of number_history; changes."""
    return tuple(_rows(con, TABLE_SIZES, []).rows[0])
