"""synthflow.workspaces: every workspace configured or stored, with its name and base URL as
the latest run that selected it was configured, and its first and last snapshot.

Contract: each run records its workspaces' settings (a rename shows at once; a workspace the
run did not select keeps its own); snapshot times are those of synthflow.snapshots, whatever
was stored or replaced; a workspace only stored (before names were kept) is listed with no
name; a database from before this view gets it on its next writer connection, and until then
`report` and `export` say how to bring it up to date. Real DuckDB files.
"""

from pathlib import Path

import duckdb
import pytest

from pipelines.cli import main
from pipelines.config import Workspace
from pipelines.warehouse.connection import connect
from pipelines.warehouse.schema import columns
from pipelines.warehouse.store import record_workspaces
from tests.history_cases import at, load_snapshot

US = "https://api.us.synthflow.ai/v2"
EU = "https://api.eu.synthflow.ai/v2"
WORKSPACES = "SELECT * FROM synthflow.workspaces ORDER BY workspace_id"


@pytest.fixture
def con(tmp_path: Path):
    with connect(tmp_path / "numbers.duckdb") as connection:
        yield connection


def test_a_run_records_names_and_base_urls_and_keeps_those_it_did_not_select(con):
    record_workspaces(
        con,
        [Workspace(id="wa", name="Acme US", base_url=US), Workspace(id="wb", base_url=EU)],
    )
    record_workspaces(con, [Workspace(id="wa", name="Acme North America", base_url=EU)])

    assert con.execute(WORKSPACES).fetchall() == [
        ("wa", "Acme North America", EU, None, None),
        ("wb", None, EU, None, None),
    ]


def test_snapshot_times_are_those_of_the_stored_snapshots(con):
    record_workspaces(con, [Workspace(id="wa", name="Acme US", base_url=US)])
    load_snapshot(con, "wa-1", "wa", at(0), {"+1": (True, None)})
    load_snapshot(con, "wa-2", "wa", at(60), {})
    load_snapshot(con, "wa-2", "wa", at(90), {"+1": (False, None)})  # the same snapshot again
    load_snapshot(con, "old-1", "stored-only", at(30), {"+2": (True, "PN2")})

    assert con.execute(WORKSPACES).fetchall() == [
        ("stored-only", None, None, at(30), at(30)),
        ("wa", "Acme US", US, at(0), at(90)),
    ]


def test_every_column_is_described():
    for table in ("workspaces", "workspace_settings"):
        assert all(description for _, _, description in columns(table)), table
    assert [name for name, _, _ in columns("workspaces")] == [
        "workspace_id",
        "name",
        "base_url",
        "first_snapshot_at",
        "last_snapshot_at",
    ]


def test_an_older_database_is_explained_to_readers_and_brought_up_to_date_by_a_writer(
    synthflow_env, tmp_path, capsys
):
    path = Path(synthflow_env["SYNTHFLOW_DUCKDB_PATH"])
    with connect(path) as con:
        load_snapshot(con, "wa-1", "wa", at(0), {"+1": (True, None)})
        con.execute("DROP VIEW synthflow.workspaces; DROP TABLE synthflow.workspace_settings")

    assert main(["report"]) == 2
    assert main(["export", str(tmp_path / "export")]) == 2
    said = capsys.readouterr().err
    assert said.count("run `synthflow-numbers snapshot`") == 2 and "Traceback" not in said

    with connect(path):  # the next writer, as `snapshot` or `rebuild-history` opens it
        pass
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute(WORKSPACES).fetchall() == [("wa", None, None, at(0), at(0))]
    assert main(["report"]) == 0
