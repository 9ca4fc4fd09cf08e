"""What the analytics show: inventory, latest changes, utilization, moves.

The same queries feed the terminal (rich tables) and the self-contained HTML page (pandas
tables and matplotlib charts embedded as data URIs: one file, no network to view it).
"""

import html
from datetime import UTC, datetime

import duckdb
from rich.console import Group
from rich.table import Table
from rich.text import Text

from pipelines.charts import UTILIZATION_OVER_TIME, png_data_uri, utilization_png

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
        table.add_row(*(Text("" if value is None else _text(value)) for value in row))
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


CHARTED_WORKSPACES = 12
LARGEST_WORKSPACES = """
    SELECT workspace_id FROM synthflow.current_numbers
    GROUP BY workspace_id ORDER BY count(*) DESC, workspace_id LIMIT ?
"""
PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 2rem; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }}
th {{ background: #f3f3f3; }}
</style></head><body>
<h1>{title}</h1><p>Generated {generated} from {source}.</p>
{body}
</body></html>
"""


def html_report(
    con: duckdb.DuckDBPyConnection, *, source: str, changes_per_workspace: int = 10
) -> str:
    """The report as one self-contained HTML page with a utilization chart."""
    largest = [row[0] for row in con.execute(LARGEST_WORKSPACES, [CHARTED_WORKSPACES]).fetchall()]
    sections = []
    utilization = con.execute(UTILIZATION_OVER_TIME, [largest]).df()
    if not utilization.empty:
        png = utilization_png(
            utilization, title="Assigned share per workspace over time", size=(10, 4.5)
        )
        note = (
            f" (the {CHARTED_WORKSPACES} workspaces with the most numbers)"
            if len(largest) == CHARTED_WORKSPACES
            else ""
        )
        sections.append(
            f"<h2>Utilization{note}</h2>"
            f'<img alt="assigned share per workspace over time" src="{png_data_uri(png)}">'
        )
    for title, query, params in (
        ("Current inventory per workspace", INVENTORY, None),
        ("Changes recorded, by type", CHANGE_COUNTS, None),
        (
            f"Latest changes (up to {changes_per_workspace} per workspace)",
            LATEST_CHANGES,
            {"per_workspace": changes_per_workspace},
        ),
        ("Utilization per snapshot", UTILIZATION, None),
        ("Numbers that moved between workspaces", MOVES, None),
    ):
        frame = con.execute(query, params).df()
        table = frame.to_html(index=False, na_rep="", border=0) if len(frame) else "<p>(none)</p>"
        sections.append(f"<h2>{html.escape(title)}</h2>{table}")
    return PAGE.format(
        title="Synthflow numbers report",
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        source=html.escape(source),
        body="\n".join(sections),
    )
