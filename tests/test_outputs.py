"""Data out: Parquet export by workspace and date, the terminal report and the HTML page.

Contract: `export DIR` writes snapshots, history and changes as Hive-partitioned Parquet
(`workspace_id=…/date=…`) that DuckDB reads back to exactly the stored rows, each row with its
workspace's name. `report` names workspaces (an unnamed one by its ID, a long ID shortened to
its ends and given whole in the Workspaces table), fits 80 columns with no name or ID cut,
shows times in UTC to the minute, explains `custom`, and says so when there are no snapshots.
`report --html FILE` writes one page, no scripts and no network, with formatted values, every
workspace (an emptied one too), assigned share per day, changes per day, moves and countries.
"""

import re
from html.parser import HTMLParser
from pathlib import Path

import duckdb
import pytest

from pipelines.warehouse.connection import connect
from tests.test_cli import run_cli

TABLES = ("snapshots", "number_snapshots", "number_history", "number_changes")
NAMES = ("Acme Support US", "Acme Sales Europe and Middle East")  # the third has none
MINUTE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d")


def short(workspace_id: str) -> str:
    return f"{workspace_id[:4]}…{workspace_id[-6:]}"


@pytest.fixture
def history(synthflow_env, simulator) -> dict:
    """Two snapshots of three workspaces, two named: between them the first has numbers
    flipped and one removed, one number moves from the second to the first, and the third is
    emptied. Returns the ids, the moved number and the database path."""
    first, second, third = simulator.workspace_ids()
    config = Path(synthflow_env["SYNTHFLOW_CONFIG"])
    config.write_text(
        f"{config.read_text()}workspaces:\n  - id: {first}\n    name: {NAMES[0]}\n"
        f"  - id: {second}\n    name: {NAMES[1]}\n"
    )
    assert run_cli("snapshot").returncode == 0
    for number in simulator.numbers(first)[:3]:
        simulator.set_available(first, number.number, not number.is_available)
    simulator.remove_number(first, simulator.numbers(first)[5].number)
    moved = simulator.numbers(second)[0].number
    simulator.move_number(moved, second, first)
    simulator.clear_workspace(third)
    assert run_cli("snapshot").returncode == 0
    return {
        "ids": (first, second, third),
        "moved": moved,
        "path": synthflow_env["SYNTHFLOW_DUCKDB_PATH"],
    }


def test_export_reads_back_to_the_same_rows(history, tmp_path):
    out = tmp_path / "export"
    result = run_cli("export", str(out))
    assert result.returncode == 0, result.stderr
    with duckdb.connect(history["path"], read_only=True) as con:
        for table in TABLES:
            columns = [row[0] for row in con.execute(f"DESCRIBE synthflow.{table}").fetchall()]
            listed = ", ".join(columns)
            exported = (
                f"SELECT {listed} FROM read_parquet('{out}/{table}/**/*.parquet', "
                "hive_partitioning = true, hive_types_autocast = false)"
            )
            stored = f"SELECT {listed} FROM synthflow.{table}"
            assert con.execute(f"SELECT count(*) FROM ({exported})").fetchone()[0] > 0
            for left, right in ((exported, stored), (stored, exported)):
                difference = con.execute(f"SELECT count(*) FROM ({left} EXCEPT ALL {right})")
                assert difference.fetchone()[0] == 0, table
        dates = {p.name for p in (out / "number_changes").glob("workspace_id=*/date=*")}
        assert dates and all(name.startswith("date=") for name in dates)


def test_export_carries_each_workspaces_name(history, tmp_path):
    out = tmp_path / "export"
    assert run_cli("export", str(out)).returncode == 0
    first, second, third = history["ids"]
    for table in TABLES:
        names = duckdb.execute(
            f"SELECT DISTINCT workspace_id, workspace_name FROM read_parquet("
            f"'{out}/{table}/**/*.parquet', hive_partitioning = true)"
        ).fetchall()
        assert dict(names) == {first: NAMES[0], second: NAMES[1], third: None}, table


def workspace_column(report: str) -> dict[str, str]:
    """The terminal report's Workspaces table as {ID: workspace}, wrapped cells joined."""
    table = report.split("\nWorkspaces", 1)[1].split("\n\n", 1)[0]
    rows: dict[str, str] = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.split("│")[1:-1]]
        if len(cells) == 3:  # a row of values (the header row is drawn with ┃)
            workspace, workspace_id, _ = cells
            if workspace_id:
                rows[last := workspace_id] = workspace
            else:
                rows[last] += f" {workspace}"
    return rows


def test_the_report_fits_80_columns_and_cuts_no_name_or_id(history):
    first, second, third = history["ids"]
    result = run_cli("report", env={"COLUMNS": "80"})

    assert result.returncode == 0, result.stderr
    report = result.stdout
    assert max(len(line) for line in report.splitlines()) <= 80
    assert workspace_column(report) == {first: NAMES[0], second: NAMES[1], third: short(third)}
    assert report.count("…") == report.count(short(third))  # nothing else is cut
    assert f"Latest changes in {NAMES[0]}" in report and history["moved"] in report
    assert "All times are UTC" in report and "changed (UTC)" in report
    assert MINUTE.search(report) and not re.search(r"\d\d:\d\d:\d\d", report)
    assert "custom: numbers without a SID" in report


class Tables(HTMLParser):
    """Each <h2> of a page with the rows of the table under it (cells as text), and whether
    the page has anything that loads or runs (a script, a link, a remote source)."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.sections: dict[str, list[list[str]]] = {}
        self.loads = False
        self._text: str | None = None
        self._title = ""
        self.feed(page)

    def handle_starttag(self, tag, attrs):
        sources = [value for name, value in attrs if name in ("src", "href")]
        self.loads |= tag in ("script", "link", "iframe") or any(
            not value.startswith("data:") for value in sources
        )
        if tag in ("h2", "td", "th"):
            self._text = ""
        elif tag == "tr":
            self.sections[self._title].append([])

    def handle_data(self, data):
        if self._text is not None:
            self._text += data

    def handle_endtag(self, tag):
        if tag == "h2":
            self._title, self._text = self._text, None
            self.sections[self._title] = []
        elif tag in ("td", "th"):
            self.sections[self._title][-1].append(self._text)
            self._text = None


def test_the_html_page_shows_every_workspace_by_name_with_formatted_values(history, tmp_path):
    first, second, third = history["ids"]
    page = tmp_path / "report.html"
    result = run_cli("report", "--html", str(page))
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    tables = Tables(text)

    assert not tables.loads
    assert '<img alt="assigned share per workspace per day" src="data:image/png;base64,' in text
    labels = {first: NAMES[0], second: NAMES[1], third: short(third)}
    header, *workspaces = tables.sections["Workspaces"]
    assert {row[1]: row[0] for row in workspaces} == labels
    assert all(MINUTE.fullmatch(row[3]) and MINUTE.fullmatch(row[4]) for row in workspaces)
    header, *inventory = tables.sections["Numbers now"]
    now = {row[0]: row[1:] for row in inventory}
    assert now[short(third)] == ["0", "0", "0", "-", "0"]  # emptied, and still listed
    assert all(re.fullmatch(r"\d+%", row[3]) for label, row in now.items() if label != short(third))
    per_day = next(rows for title, rows in tables.sections.items() if "per day," in title)
    assert {row[1] for row in per_day[1:]} == set(labels.values())
    header, move = tables.sections["Numbers that moved between workspaces"]
    assert move[:3] == [history["moved"], NAMES[1], NAMES[0]]
    countries = tables.sections["Numbers now, by country"]
    assert {row[1] for row in countries[1:]} == {NAMES[0], NAMES[1]}
    cells = [cell for rows in tables.sections.values() for row in rows for cell in row]
    unformatted = re.compile(r"<NA>|nan|None|\.\d{3}|\d\d:\d\d:\d\d")  # 0.275000, seconds
    assert not [cell for cell in cells if not cell or unformatted.search(cell)]
    for header, *rows in filter(None, tables.sections.values()):
        for i, column in enumerate(header):
            if any(MINUTE.match(row[i]) for row in rows):
                assert column.endswith("(UTC)"), column


def test_a_database_without_snapshots_says_so(synthflow_env, tmp_path):
    with connect(Path(synthflow_env["SYNTHFLOW_DUCKDB_PATH"])):
        pass
    page = tmp_path / "report.html"

    printed = run_cli("report")
    written = run_cli("report", "--html", str(page))

    assert printed.returncode == 0 and written.returncode == 0, printed.stderr + written.stderr
    assert "No snapshots yet" in printed.stdout and "No snapshots yet" in page.read_text()
    assert "┃" not in printed.stdout  # no empty tables
