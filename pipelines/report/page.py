"""The report as one self-contained HTML page: the sections as tables and a chart of assigned
share per day, embedded as a data URI."""

import html

import duckdb

from pipelines.report import (
    COUNTS,
    NO_SNAPSHOTS,
    Section,
    answers_and_labels,
    generated_at,
    sections,
)
from pipelines.report.chart import LEGEND_LIMIT, png_data_uri, utilization_png
from pipelines.warehouse.analytics import Rows, daily_utilization

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2rem; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 0.5rem; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.25rem 0.6rem; text-align: left; }}
th {{ background: #f3f3f3; }}
.n {{ text-align: right; font-variant-numeric: tabular-nums; }}
.note {{ color: #555; font-size: 0.85rem; }}
h2 {{ margin-top: 2rem; }}
</style></head><body>
<h1>{title}</h1><p>Generated {generated} from {source}. All times are UTC.</p>
{body}
</body></html>
"""


def _html(section: Section) -> str:
    title = f"<h2>{html.escape(section.title)}</h2>"
    if not section.rows:
        return f"{title}<p>{html.escape(section.empty)}</p>"

    def cells(tag: str, values: tuple[str, ...]) -> str:
        return "".join(
            f"<{tag}{' class=n' if column in COUNTS else ''}>{html.escape(value)}</{tag}>"
            for column, value in zip(section.columns, values, strict=True)
        )

    body = "".join(f"<tr>{cells('td', row)}</tr>" for row in section.rows)
    note = f'<p class="note">{html.escape(section.note)}</p>' if section.note else ""
    return (
        f"{title}<table><thead><tr>{cells('th', section.columns)}</tr></thead>"
        f"<tbody>{body}</tbody></table>{note}"
    )


def _chart(con: duckdb.DuckDBPyConnection, answers: dict[str, Rows], labels: dict[str, str]) -> str:
    """Assigned share per day of the LEGEND_LIMIT workspaces with the most numbers now, an
    emptied one (none now) among them when there is room."""
    inventory = sorted(answers["inventory"].records(), key=lambda r: -r["numbers"])
    charted = [r["workspace_id"] for r in inventory[:LEGEND_LIMIT]]
    frame = daily_utilization(con, charted).frame()
    png = utilization_png(
        frame,
        title="Assigned share per workspace at the end of each UTC day",
        size=(10, 4.5),
        labels=labels,
    )
    which = f" (the {LEGEND_LIMIT} with the most numbers)" if len(inventory) > LEGEND_LIMIT else ""
    return (
        f"<h2>Assigned share per day{which}</h2>"
        f'<img alt="assigned share per workspace per day" src="{png_data_uri(png)}">'
    )


def html_report(
    con: duckdb.DuckDBPyConnection, *, source: str, changes_per_workspace: int = 10
) -> str:
    """The report as one self-contained HTML page with a chart of assigned share per day."""
    answers, labels = answers_and_labels(con, changes_per_workspace)
    if answers["inventory"].rows:
        shown = sections(answers, labels, changes_per_workspace, page=True)
        parts = [_html(shown[0]), _chart(con, answers, labels), *map(_html, shown[1:])]
    else:
        parts = [f"<p>{html.escape(NO_SNAPSHOTS)}</p>"]
    return PAGE.format(
        title="Synthflow numbers report",
        generated=generated_at(),
        source=html.escape(source),
        body="\n".join(parts),
    )
