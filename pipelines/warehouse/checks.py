"""Data-quality checks over what a run stored, as SQL that returns the offending rows.

Each check is one record (name, description, SQL), from which Dagster declares and reports
it. No rows back means the check passed.
"""

from dataclasses import dataclass

import duckdb

from pipelines.warehouse.connection import cursor


@dataclass(frozen=True)
class Check:
    """`sql` takes one parameter, the snapshot ids (snapshot checks) or workspace ids (history
    checks) to check, and returns the rows that fail."""

    name: str
    description: str
    sql: str


E164_PATTERN = r"^\+[1-9][0-9]{1,14}$"

SNAPSHOT_CHECKS = (
    Check(
        "row_count_matches_total",
        "Each stored snapshot holds exactly total_records numbers.",
        """
        SELECT s.workspace_id, s.snapshot_id, s.total_records, count(n.number) AS stored
        FROM synthflow.snapshots s
        LEFT JOIN synthflow.number_snapshots n USING (snapshot_id)
        WHERE s.snapshot_id IN (SELECT unnest(?::VARCHAR[]))
        GROUP BY ALL
        HAVING count(n.number) <> s.total_records OR s.row_count <> s.total_records
        """,
    ),
    Check(
        "numbers_unique",
        "No number appears twice in one snapshot.",
        """
        SELECT workspace_id, snapshot_id, number, count(*) AS copies
        FROM synthflow.number_snapshots
        WHERE snapshot_id IN (SELECT unnest(?::VARCHAR[]))
        GROUP BY ALL
        HAVING count(*) > 1
        """,
    ),
    Check(
        "numbers_are_e164",
        "Every stored number is in E.164 form (+ and 2 to 15 digits).",
        f"""
        SELECT workspace_id, snapshot_id, number
        FROM synthflow.number_snapshots
        WHERE snapshot_id IN (SELECT unnest(?::VARCHAR[]))
          AND NOT regexp_full_match(number, '{E164_PATTERN}')
        """,
    ),
)

HISTORY_CHECKS = (
    Check(
        "no_overlapping_versions",
        "Versions of one number in one workspace never overlap.",
        """
        SELECT workspace_id, number, valid_from, valid_to, previous_valid_to
        FROM (
            SELECT *, lag(valid_to) OVER versions AS previous_valid_to,
                   row_number() OVER versions AS nth
            FROM synthflow.number_history
            WHERE workspace_id IN (SELECT unnest(?::VARCHAR[]))
            WINDOW versions AS (PARTITION BY workspace_id, number ORDER BY valid_from)
        )
        WHERE nth > 1 AND (previous_valid_to IS NULL OR previous_valid_to > valid_from)
           OR valid_to <= valid_from
        """,
    ),
    Check(
        "one_open_version_per_number",
        "At most one open version per number; is_current agrees.",
        """
        SELECT workspace_id, number, count(*) FILTER (WHERE valid_to IS NULL) AS open_versions
        FROM synthflow.number_history
        WHERE workspace_id IN (SELECT unnest(?::VARCHAR[]))
        GROUP BY ALL
        HAVING count(*) FILTER (WHERE valid_to IS NULL) > 1
            OR count(*) FILTER (WHERE is_current IS DISTINCT FROM (valid_to IS NULL)) > 0
        """,
    ),
    Check(
        "changes_match_versions",
        "Every change event agrees with the versions before and after it.",
        """
        SELECT c.workspace_id, c.number, c.changed_at, c.change_type
        FROM synthflow.number_changes c
        WHERE c.workspace_id IN (SELECT unnest(?::VARCHAR[]))
          AND NOT coalesce(
            (c.change_type IN ('removed', 'assigned', 'released', 'sid_changed')) = EXISTS (
                SELECT 1 FROM synthflow.number_history h
                WHERE h.workspace_id = c.workspace_id AND h.number = c.number
                  AND h.valid_to = c.changed_at AND h.is_available = c.was_available)
            AND (c.change_type IN ('added', 'assigned', 'released', 'sid_changed')) = EXISTS (
                SELECT 1 FROM synthflow.number_history h
                WHERE h.workspace_id = c.workspace_id AND h.number = c.number
                  AND h.valid_from = c.changed_at AND h.is_available = c.is_available),
            false)
        """,
    ),
)


def failing_rows(con: duckdb.DuckDBPyConnection, check: Check, scope: list[str]) -> list[tuple]:
    """The rows that fail `check` in `scope`, on a cursor of its own (safe beside other work)."""
    with cursor(con) as own:
        return own.execute(check.sql, [scope]).fetchall()
