"""Data from the API, the database or the config reaches the terminal literally.

Contract: rich reads `[...]` in strings as markup; a workspace name, a number, a sid, a
workspace id or an error message that holds `[/]` or `[bold]` is printed as written (no crash,
no style) in the snapshot progress and summary, the report, `query`'s column names and the
error line.
"""

import io
from pathlib import Path

from rich.console import Console

from pipelines.cli import main
from pipelines.cli.snapshot import summary_table
from pipelines.config import Workspace
from pipelines.report import build_report
from pipelines.snapshot import WorkspaceOutcome
from pipelines.warehouse.connection import connect
from pipelines.warehouse.store import SnapshotRow
from tests.history_cases import at, load_snapshot
from tests.test_cli import run_cli

NAME = "[/] Acme [bold]EU[/]"
NUMBER = "[/]+15550001"
SID = "[bold]x[/]"
WORKSPACE_ID = "[red]w[/]"


def rendered(renderable) -> str:
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def a_database(path: Path) -> Path:
    with connect(path) as con:
        load_snapshot(con, "s1", WORKSPACE_ID, at(0), {NUMBER: (True, SID)})
        load_snapshot(con, "s2", WORKSPACE_ID, at(5), {NUMBER: (False, SID)})
    return path


def test_the_summary_table_shows_workspace_names_as_written():
    workspace = Workspace(id="w1", name=NAME, base_url="http://127.0.0.1/v2", api_key_env="K")
    stored = SnapshotRow("w1/r", "w1", at(0), 1, 1, 1, "r")
    outcomes = [
        WorkspaceOutcome(workspace=workspace, snapshot=stored, available=1),
        WorkspaceOutcome(workspace=workspace, error="failed [/]"),
    ]

    text = rendered(summary_table(outcomes))

    assert text.count(f"w1 ({NAME})") == 2


def test_the_report_shows_numbers_sids_and_workspace_ids_as_written(tmp_path):
    with connect(a_database(tmp_path / "numbers.duckdb"), read_only=True) as con:
        text = rendered(build_report(con))

    assert NUMBER in text and WORKSPACE_ID in text and "assigned" in text


def test_report_prints_a_database_of_markup_like_values(synthflow_env, tmp_path):
    database = a_database(tmp_path / "numbers.duckdb")

    result = run_cli("report", env={"SYNTHFLOW_DUCKDB_PATH": str(database)})

    assert result.returncode == 0, result.stderr
    assert NUMBER in result.stdout and WORKSPACE_ID in result.stdout


def test_query_prints_column_names_of_markup_as_written(synthflow_env, tmp_path):
    database = a_database(tmp_path / "numbers.duckdb")
    sql = "PIVOT (SELECT sid FROM synthflow.number_snapshots) ON sid USING count(*)"

    result = run_cli("query", sql, env={"SYNTHFLOW_DUCKDB_PATH": str(database)})

    assert result.returncode == 0, result.stderr
    assert SID in result.stdout  # a column named after a sid from the API


def test_snapshot_prints_a_workspace_name_of_markup_as_written(synthflow_env, simulator):
    workspace_id = simulator.workspace_ids()[0]
    config = Path(synthflow_env["SYNTHFLOW_CONFIG"])
    config.write_text(
        f'{config.read_text()}workspaces:\n  - id: {workspace_id}\n    name: "{NAME}"\n'
    )

    result = run_cli("snapshot", env={"SYNTHFLOW_WORKSPACES": workspace_id})

    assert result.returncode == 0, result.stderr
    assert f"{workspace_id} ({NAME})" in result.stdout
    assert f"stored {workspace_id} ({NAME})" in result.stderr


def test_an_error_message_is_printed_as_written(synthflow_env, tmp_path, monkeypatch, capsys):
    missing = tmp_path / "[/]" / "numbers.duckdb"
    monkeypatch.setenv("SYNTHFLOW_DUCKDB_PATH", str(missing))

    assert main(["report"]) == 2

    assert f"error: there is no database at {missing} yet" in capsys.readouterr().err
