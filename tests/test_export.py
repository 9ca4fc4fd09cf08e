"""`export DIR` never deletes what it did not write, and replaces its own export whole.

Contract: a table folder in DIR that an earlier export did not write, or that holds anything
that export did not write, is refused (ExportError naming it) and left as it was; a second
export replaces the first exactly (the rows of now, no partition of then); an export that fails
while writing or while swapping leaves the previous export as it was and no staging folder;
files in DIR beside the table folders are never touched. Real DuckDB files throughout.
"""

from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipelines.warehouse.connection import connect
from pipelines.warehouse.export import EXPORTS, MARKER, STAGING, ExportError, export_parquet
from tests.history_cases import at, load_snapshot
from tests.permissions import run_cli


@pytest.fixture
def database(tmp_path: Path) -> Path:
    """Two workspaces, two snapshots each, a day apart: every table has rows on two dates."""
    path = tmp_path / "numbers.duckdb"
    with connect(path) as con:
        for workspace_id in ("wa", "wb"):
            load_snapshot(con, f"{workspace_id}-1", workspace_id, at(0), {"+1": (True, None)})
            load_snapshot(
                con, f"{workspace_id}-2", workspace_id, at(24 * 60), {"+1": (False, "PN1")}
            )
    return path


@pytest.fixture
def con(database: Path) -> Iterator[duckdb.DuckDBPyConnection]:
    with connect(database) as connection:
        yield connection


def contents(directory: Path) -> dict[str, bytes | None]:
    """Every path under the folder, with a file's bytes."""
    return {
        str(path.relative_to(directory)): path.read_bytes() if path.is_file() else None
        for path in directory.rglob("*")
    }


def exported_rows(directory: Path, table: str) -> int:
    files = f"{directory}/{table}/**/*.parquet"
    return duckdb.execute(f"SELECT count(*) FROM read_parquet('{files}')").fetchone()[0]


def partitions(directory: Path, table: str) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.glob(f"{table}/*/*") if p.is_dir()}


def test_a_strangers_table_folder_is_refused_and_left_as_it_was(con, tmp_path):
    out = tmp_path / "out"
    (out / "snapshots").mkdir(parents=True)
    (out / "snapshots" / "mine.csv").write_text("keep me\n")
    before = contents(out)

    with pytest.raises(ExportError, match=f"{out / 'snapshots'} was not written by"):
        export_parquet(con, out)

    assert contents(out) == before


def test_a_file_put_into_an_earlier_export_is_refused_and_kept(con, tmp_path):
    out = tmp_path / "out"
    export_parquet(con, out)
    note = next((out / "number_history").glob("workspace_id=*")) / "notes.txt"
    note.write_text("mine\n")
    before = contents(out)

    with pytest.raises(ExportError, match=f"{note} was not written by"):
        export_parquet(con, out)

    assert contents(out) == before


def test_a_second_export_replaces_the_first_exactly(con, tmp_path):
    out = tmp_path / "out"
    export_parquet(con, out)
    assert "number_changes/workspace_id=wb/date=2025-01-02" in partitions(out, "number_changes")
    for table in ("snapshots", "number_snapshots", "number_history", "number_changes"):
        con.execute(f"DELETE FROM synthflow.{table} WHERE workspace_id = 'wb'")
    load_snapshot(con, "wa-3", "wa", at(3 * 24 * 60), {"+2": (True, None)})

    written = export_parquet(con, out)

    for table in EXPORTS:
        stored = con.execute(f"SELECT count(*) FROM synthflow.{table}").fetchone()[0]
        assert written[table] == exported_rows(out, table) == stored, table
        dates = con.execute(
            f"SELECT DISTINCT workspace_id, date FROM ({EXPORTS[table]})"
        ).fetchall()
        assert partitions(out, table) == {
            f"{table}/workspace_id={workspace_id}/date={date}" for workspace_id, date in dates
        }
    assert sorted(path.name for path in out.iterdir()) == sorted(EXPORTS)


def test_files_beside_the_tables_survive_every_export(con, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.txt").write_text("what these files are\n")
    (out / "queries").mkdir()
    (out / "queries" / "daily.sql").write_text("SELECT 1;\n")
    beside = contents(out)

    export_parquet(con, out)
    export_parquet(con, out)

    assert {name: data for name, data in contents(out).items() if name in beside} == beside


def test_an_export_that_fails_while_writing_leaves_the_previous_one_and_no_staging(con, tmp_path):
    out = tmp_path / "out"
    export_parquet(con, out)
    before = contents(out)
    # The last table's query now fails once the first three tables are staged.
    con.execute("ALTER TABLE synthflow.number_changes RENAME TO number_changes_kept")
    con.execute(
        "CREATE VIEW synthflow.number_changes AS SELECT * FROM synthflow.number_changes_kept "
        "WHERE error('the disk is full') IS NULL"
    )

    with pytest.raises(duckdb.Error, match="the disk is full"):
        export_parquet(con, out)

    assert contents(out) == before
    assert not (out / STAGING).exists()


def test_an_export_that_fails_while_swapping_puts_the_previous_one_back(database, tmp_path):
    out = tmp_path / "out"
    assert run_cli("export", str(out), env={"SYNTHFLOW_DUCKDB_PATH": str(database)}).returncode == 0
    before = contents(out)
    # A folder that does not let its `..` entry be rewritten cannot move to another folder:
    # the last table's swap fails after the first three tables were swapped.
    (out / "number_changes").chmod(0o555)
    try:
        result = run_cli("export", str(out), env={"SYNTHFLOW_DUCKDB_PATH": str(database)})
    finally:
        (out / "number_changes").chmod(0o755)

    assert result.returncode == 2
    assert result.stderr.startswith("error: could not write the export")
    assert contents(out) == before
    assert not (out / STAGING).exists()


def test_the_staging_folder_a_killed_export_left_does_not_block_the_next(con, tmp_path):
    out = tmp_path / "out"
    export_parquet(con, out)
    left = out / STAGING  # as an export killed while writing leaves it
    (left / "snapshots").mkdir(parents=True)
    (left / MARKER).write_text('{"written": []}')
    (left / "snapshots" / "tmp_data_0.parquet").write_bytes(b"PAR1")

    export_parquet(con, out)

    assert not left.exists()
    assert exported_rows(out, "snapshots") == 4


TABLES = ("snapshots", "number_snapshots", "number_history", "number_changes")


def rows(path: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(path), read_only=True) as con:
        con.execute("SET TimeZone = 'UTC'")
        return {t: con.execute(f"FROM synthflow.{t} ORDER BY ALL").fetchall() for t in TABLES}


def test_an_export_imported_into_an_empty_warehouse_gives_it_the_same_tables(
    database: Path, tmp_path: Path
):
    out, copy = tmp_path / "out", tmp_path / "copy.duckdb"
    with connect(database) as con:
        export_parquet(con, out)

    done = run_cli("import", str(out), env={"SYNTHFLOW_DUCKDB_PATH": str(copy)})

    assert done.returncode == 0, done.stderr
    assert f"{out / 'number_snapshots'}: 4 rows imported" in done.stdout
    assert rows(copy) == rows(database)


def test_an_import_into_a_warehouse_holding_snapshots_is_refused_and_changes_nothing(
    database: Path, tmp_path: Path
):
    out = tmp_path / "out"
    with connect(database) as con:
        export_parquet(con, out)
    before = rows(database)

    refused = run_cli("import", str(out), env={"SYNTHFLOW_DUCKDB_PATH": str(database)})
    stranger = run_cli("import", str(tmp_path), env={"SYNTHFLOW_DUCKDB_PATH": str(database)})

    assert refused.returncode == 2 and "already holds 4 snapshots" in refused.stderr
    assert stranger.returncode == 2 and "holds no export of snapshots" in stranger.stderr
    assert rows(database) == before
