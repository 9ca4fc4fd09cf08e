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

from pipelines.charts import png_data_uri, utilization_png
from pipelines.warehouse.analytics import (
    Rows,
    largest_workspaces,
    report_sections,
    utilization_over_time,
)


def _table(title: str, answer: Rows) -> Table:
    table = Table(title=title, title_justify="left", header_style="bold")
    for column in answer.columns:
        table.add_column(column)
    for row in answer.rows:
        table.add_row(*(Text("" if value is None else _text(value)) for value in row))
    if not answer.rows:
        table.add_row(*(["(none)"] + [""] * (len(answer.columns) - 1)))
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
        *(_table(title, answer) for title, answer in report_sections(con, changes_per_workspace))
    )


CHARTED_WORKSPACES = 12
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
    largest = largest_workspaces(con, CHARTED_WORKSPACES)
    sections = []
    utilization = utilization_over_time(con, largest).frame()
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
    for title, answer in report_sections(con, changes_per_workspace):
        frame = answer.frame()
        table = frame.to_html(index=False, na_rep="", border=0) if len(frame) else "<p>(none)</p>"
        sections.append(f"<h2>{html.escape(title)}</h2>{table}")
    return PAGE.format(
        title="Synthflow numbers report",
        generated=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        source=html.escape(source),
        body="\n".join(sections),
    )
