"""What the report, Dagster's metadata and analysts ask of the warehouse: each question one query.

Answers come back as plain rows with their column names, so whoever shows them (rich tables,
the HTML page, the chart, Dagster metadata, `query`'s output) never touches DuckDB.
"""

from dataclasses import dataclass
from datetime import datetime

import duckdb
import pandas as pd

from pipelines.user_errors import UserError
from pipelines.warehouse.connection import cursor
from pipelines.warehouse.history import CHANGE_TYPES

# The report's questions, each answered in one query. Workspaces come from synthflow.workspaces:
# every one configured or stored, an emptied one (no numbers now) included.
WORKSPACES = """
    SELECT workspace_id, name, base_url, first_snapshot_at, last_snapshot_at
    FROM synthflow.workspaces
    ORDER BY workspace_id
"""
INVENTORY = """
    SELECT w.workspace_id, count(c.number) AS numbers,
           count(*) FILTER (WHERE c.is_available) AS available,
           count(*) FILTER (WHERE NOT c.is_available) AS assigned,
           count(*) FILTER (WHERE c.number IS NOT NULL AND c.sid IS NULL) AS custom
    FROM synthflow.workspaces w
    LEFT JOIN synthflow.current_numbers c USING (workspace_id)
    WHERE w.last_snapshot_at IS NOT NULL
    GROUP BY w.workspace_id
    ORDER BY w.workspace_id
"""
BY_COUNTRY = """
    SELECT country, workspace_id, count(*) AS numbers,
           count(*) FILTER (WHERE is_available) AS available,
           count(*) FILTER (WHERE NOT is_available) AS assigned,
           count(*) FILTER (WHERE sid IS NULL) AS custom
    FROM synthflow.current_numbers
    GROUP BY ALL
    ORDER BY country NULLS LAST, workspace_id
"""
CHANGE_COUNTS = f"""
    PIVOT (SELECT workspace_id, change_type FROM synthflow.number_changes)
    ON change_type IN ({", ".join(f"'{kind}'" for kind in CHANGE_TYPES)}) USING count(*)
    GROUP BY workspace_id
    ORDER BY workspace_id
"""
RECENT_DAYS = 30  # the span of changes per day: the last 30 UTC days, today included
CHANGES_PER_DAY = f"""
    SELECT day, workspace_id, added, removed, assigned, released
    FROM synthflow.daily_churn
    WHERE day > timezone('UTC', now())::DATE - {RECENT_DAYS}
      AND added + removed + assigned + released > 0
    ORDER BY day DESC, workspace_id
"""
LATEST_CHANGES = """
    SELECT workspace_id, changed_at, change_type, number, was_available, is_available
    FROM synthflow.number_changes
    QUALIFY row_number() OVER (
        PARTITION BY workspace_id ORDER BY changed_at DESC, change_type, number
    ) <= $per_workspace
    ORDER BY workspace_id, changed_at DESC, change_type, number
"""
MOVES = """
    SELECT number, from_workspace_id, to_workspace_id, window_start, window_end
    FROM synthflow.number_moves
    ORDER BY window_end, number
"""
# list_contains, not IN (subquery): DuckDB pushes it into the view, so only these workspaces'
# snapshots are aggregated.
DAILY_UTILIZATION = """
    SELECT workspace_id, day, CASE WHEN numbers = 0 THEN 0.0 ELSE assigned / numbers END
        AS assigned_share
    FROM synthflow.daily_inventory
    WHERE list_contains(?::VARCHAR[], workspace_id)
    ORDER BY workspace_id, day
"""
NEWEST_SNAPSHOT_TIMES = """
    SELECT workspace_id, max(taken_at) AS taken_at
    FROM synthflow.snapshots
    WHERE list_contains(?::VARCHAR[], workspace_id)
    GROUP BY workspace_id
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

    def records(self) -> list[dict]:
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class QueryError(UserError):
    """An analyst's query that DuckDB refused; its message says why."""


class OutdatedDatabaseError(UserError):
    """The database was last written by a version without synthflow.workspaces (and the views
    created with it); a reader cannot add them, the next writer does."""


HAS_WORKSPACES = """
    SELECT count(*) FROM duckdb_views() WHERE schema_name = 'synthflow' AND view_name = 'workspaces'
"""


def require_workspaces(con: duckdb.DuckDBPyConnection) -> None:
    """Refuse, with the fix, a database that has no synthflow.workspaces yet."""
    if not _rows(con, HAS_WORKSPACES).rows[0][0]:
        raise OutdatedDatabaseError(
            "the database was last written by an older synthflow-numbers, without the "
            "views the report and export read; run `synthflow-numbers snapshot` (or "
            "`rebuild-history`, which needs no API) once to bring it up to date, then this again"
        )


def _rows(con: duckdb.DuckDBPyConnection, query: str, params: object = None) -> Rows:
    with cursor(con) as own:
        result = own.execute(query, params)
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


def report_answers(con: duckdb.DuckDBPyConnection, changes_per_workspace: int) -> dict[str, Rows]:
    """Every answer the report shows, by name: workspaces, inventory, by_country,
    change_counts, changes_per_day, latest_changes (up to `changes_per_workspace` per
    workspace) and moves."""
    require_workspaces(con)
    answers = {
        name: _rows(con, query)
        for name, query in [
            ("workspaces", WORKSPACES),
            ("inventory", INVENTORY),
            ("by_country", BY_COUNTRY),
            ("change_counts", CHANGE_COUNTS),
            ("changes_per_day", CHANGES_PER_DAY),
            ("moves", MOVES),
        ]
    }
    answers["latest_changes"] = _rows(con, LATEST_CHANGES, {"per_workspace": changes_per_workspace})
    return answers


def daily_utilization(con: duckdb.DuckDBPyConnection, workspace_ids: list[str]) -> Rows:
    """Assigned share of these workspaces at the end of each UTC day from their first snapshot
    to today (synthflow.daily_inventory; 0 for a day without numbers, as workspace_utilization)."""
    return _rows(con, DAILY_UTILIZATION, [workspace_ids])


def newest_snapshot_times(
    con: duckdb.DuckDBPyConnection, workspace_ids: list[str]
) -> dict[str, datetime]:
    """When each of these workspaces' newest snapshot was taken; none for one never stored."""
    return dict(_rows(con, NEWEST_SNAPSHOT_TIMES, [workspace_ids]).rows)


def table_sizes(con: duckdb.DuckDBPyConnection) -> tuple[int, int, int, int]:
    """Rows of number_snapshots; versions and current numbers of number_history; changes."""
    return tuple(_rows(con, TABLE_SIZES, []).rows[0])
