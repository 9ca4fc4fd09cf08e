"""What the analytics show, for people: the terminal report and the self-contained HTML page.

Both show the same sections, their values written here once: workspaces by name (an unnamed
one by its ID, shortened to its ends when long; the Workspaces section gives each full ID),
times in UTC to the minute, shares as percentages, counts with thousands separators. In the
terminal it fits 80 columns: names and labels wrap, nothing is cut. The page embeds its chart
as a data URI: one file, no scripts, no network to view it (`page.py`, `chart.py`).
"""

from collections import Counter
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

import duckdb
from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from pipelines.warehouse.analytics import RECENT_DAYS, Rows, report_answers
from pipelines.warehouse.history import CHANGE_TYPES

NO_SNAPSHOTS = (
    "No snapshots yet: `synthflow-numbers snapshot` takes the first "
    "(`synthflow-numbers demo` shows the report on simulated data)."
)
INVENTORY_NOTE = (
    "available: not assigned to an inbound agent. custom: numbers without a SID, i.e. SIP or "
    "other custom numbers brought to Synthflow (counted in numbers)."
)
CHANGES_NOTE = (
    "added, removed: the number appeared in or left the workspace; assigned, released: it was "
    "given to an inbound agent or freed."
)
# Right-aligned columns; and the only ones whose values wrap in the terminal (others, such as
# IDs, numbers and times, are kept whole on their lines).
COUNTS = {"numbers", "available", "assigned", "custom", "assigned share", *CHANGE_TYPES}
WRAPPING = {"workspace", "from", "to", "base URL"}


@dataclass(frozen=True)
class Section:
    """One titled table, its values already text; `empty` is said when it has no rows."""

    title: str
    columns: tuple[str, ...]
    rows: list[tuple[str, ...]]
    empty: str = ""
    note: str = ""

    def only(self, *columns: str) -> "Section":
        keep = [self.columns.index(column) for column in columns]
        return replace(self, columns=columns, rows=[tuple(r[i] for i in keep) for r in self.rows])


def _when(value: datetime | date | None) -> str:
    if value is None:
        return "none yet"
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    return value.isoformat()


def _count(value: int) -> str:
    return f"{value:,}"


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "-"


def _state(available: bool) -> str:
    return "available" if available else "assigned"


def _availability(was: bool | None, now: bool | None) -> str:
    """Availability around a change: the new state, the one left, or both when it changed."""
    if was is None or now is None:
        return _state(now) if was is None else f"was {_state(was)}"
    return _state(now) if was == now else f"{_state(was)} → {_state(now)}"


def _short(workspace_id: str) -> str:
    """A long ID by its ends: Synthflow's are 32 characters, `1654…557688` is enough to tell."""
    return workspace_id if len(workspace_id) <= 16 else f"{workspace_id[:4]}…{workspace_id[-6:]}"


def _labels(workspaces: list[dict]) -> dict[str, str]:
    """What the report calls each workspace, in the order it lists them: its name, else its
    short ID; a label two workspaces would share gets the full ID added."""
    labels = {w["workspace_id"]: w["name"] or _short(w["workspace_id"]) for w in workspaces}
    shared = {label for label, n in Counter(labels.values()).items() if n > 1}
    labels = {wid: f"{name} ({wid})" if name in shared else name for wid, name in labels.items()}
    return dict(sorted(labels.items(), key=lambda item: item[1].casefold()))


def sections(
    answers: dict[str, Rows], labels: dict[str, str], changes_per_workspace: int, *, page: bool
) -> list[Section]:
    """The report's sections; the page's are wider (base URL, first snapshot, changes per day)."""
    order = {workspace_id: i for i, workspace_id in enumerate(labels)}

    def by_workspace(name: str) -> list[dict]:
        return sorted(answers[name].records(), key=lambda r: order[r["workspace_id"]])

    workspaces = Section(
        "Workspaces",
        ("workspace", "ID", "base URL", "first snapshot (UTC)", "last snapshot (UTC)"),
        [
            (
                labels[w["workspace_id"]],
                w["workspace_id"],
                w["base_url"] or "not recorded",
                _when(w["first_snapshot_at"]),
                _when(w["last_snapshot_at"]),
            )
            for w in by_workspace("workspaces")
        ],
    )
    inventory = Section(
        "Numbers now",
        ("workspace", "numbers", "available", "assigned", "assigned share", "custom"),
        [
            (
                labels[r["workspace_id"]],
                _count(r["numbers"]),
                _count(r["available"]),
                _count(r["assigned"]),
                _share(r["assigned"], r["numbers"]),
                _count(r["custom"]),
            )
            for r in by_workspace("inventory")
        ],
        note=INVENTORY_NOTE,
    )
    if page:
        kinds = answers["changes_per_day"].columns[2:]  # daily_churn's: no sid_changed
        newest_first = sorted(by_workspace("changes_per_day"), key=lambda r: r["day"], reverse=True)
        changes = Section(
            f"Changes per day, the last {RECENT_DAYS} days",
            ("day (UTC)", "workspace", *kinds),
            [
                (_when(r["day"]), labels[r["workspace_id"]], *(_count(r[k]) for k in kinds))
                for r in newest_first
            ],
            empty=f"No changes in the last {RECENT_DAYS} days.",
            note=CHANGES_NOTE,
        )
    else:
        changes = Section(
            "Changes recorded, by type",
            ("workspace", *CHANGE_TYPES),
            [
                (labels[r["workspace_id"]], *(_count(r[k]) for k in CHANGE_TYPES))
                for r in by_workspace("change_counts")
            ],
            empty="No changes recorded yet.",
            note=CHANGES_NOTE,
        )
    latest: dict[str, list[tuple[str, ...]]] = {}
    for r in by_workspace("latest_changes"):
        latest.setdefault(r["workspace_id"], []).append(
            (
                _when(r["changed_at"]),
                r["change_type"],
                r["number"],
                _availability(r["was_available"], r["is_available"]),
            )
        )
    latest_sections = [
        Section(
            f"Latest changes in {labels[workspace_id]} (up to {changes_per_workspace})",
            ("changed (UTC)", "change", "number", "availability"),
            rows,
        )
        for workspace_id, rows in latest.items()
    ] or [Section("Latest changes", (), [], empty="No changes recorded yet.")]
    moves = Section(
        "Numbers that moved between workspaces",
        ("number", "from", "to", "between (UTC)"),
        [
            (
                r["number"],
                labels[r["from_workspace_id"]],
                labels[r["to_workspace_id"]],
                f"{_when(r['window_start'])} and\n{_when(r['window_end'])}",
            )
            for r in answers["moves"].records()
        ],
        empty="No number moved from one workspace to another.",
    )
    countries = Section(
        "Numbers now, by country",
        ("country", "workspace", "numbers", "available", "assigned", "custom"),
        [
            (
                r["country"] or "unknown",
                labels[r["workspace_id"]],
                *(_count(r[k]) for k in ("numbers", "available", "assigned", "custom")),
            )
            for r in sorted(
                by_workspace("by_country"), key=lambda r: (r["country"] is None, r["country"] or "")
            )
        ],
        empty="No workspace has numbers now.",
    )
    if not page:
        workspaces = workspaces.only("workspace", "ID", "last snapshot (UTC)")
    return [workspaces, inventory, changes, *latest_sections, moves, countries]


def answers_and_labels(
    con: duckdb.DuckDBPyConnection, changes_per_workspace: int
) -> tuple[dict[str, Rows], dict[str, str]]:
    """The warehouse's answers for the report, and each workspace's label as it shows it."""
    answers = report_answers(con, changes_per_workspace)
    return answers, _labels(answers["workspaces"].records())


def generated_at() -> str:
    """Now, as the report's heading says it."""
    return f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC"


def _rich(section: Section) -> RenderableType:
    if not section.rows:
        return Text.assemble((section.title, "italic"), "\n", section.empty)
    table = Table(
        title=Text(section.title),
        title_justify="left",
        caption=Text(section.note) if section.note else None,
        caption_justify="left",
        header_style="bold",
    )
    for column in section.columns:
        table.add_column(
            column,
            justify="right" if column in COUNTS else "left",
            overflow="fold",
            no_wrap=column not in WRAPPING,
        )
    for row in section.rows:
        table.add_row(*(Text(value) for value in row))
    return table


def build_report(con: duckdb.DuckDBPyConnection, *, changes_per_workspace: int = 10) -> Group:
    """The whole report for the terminal."""
    answers, labels = answers_and_labels(con, changes_per_workspace)
    heading = Text(f"Synthflow numbers report, generated {generated_at()}. All times are UTC.")
    if not answers["inventory"].rows:
        return Group(heading, Text(NO_SNAPSHOTS))
    parts: list[RenderableType] = [heading]
    for section in sections(answers, labels, changes_per_workspace, page=False):
        parts += [Text(), _rich(section)]
    return Group(*parts)
