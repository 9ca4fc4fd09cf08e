"""Export to Parquet, `DIR/<table>/workspace_id=<id>/date=<UTC day>/*.parquet`, never deleting
what it did not write: each table folder holds a marker listing what the export wrote there.
An export imported into an empty warehouse (the file's into a DuckLake, say) gives it the same
snapshots, and history rebuilt from them."""

import fcntl
import json
import os
import shutil
from pathlib import Path

import duckdb

from pipelines.user_errors import UserError
from pipelines.warehouse.analytics import require_workspaces
from pipelines.warehouse.connection import committed, sql_literal
from pipelines.warehouse.history import rebuild_history

# Each row carries its workspace's name (NULL when it has none) from synthflow.workspaces.
EXPORTS = {
    table: f"""
        SELECT t.*, w.name AS workspace_name, CAST(timezone('UTC', t.{dated_by}) AS DATE) AS date
        FROM synthflow.{table} AS t LEFT JOIN synthflow.workspaces AS w USING (workspace_id)
    """
    for table, dated_by in [
        ("snapshots", "taken_at"),
        ("number_snapshots", "taken_at"),
        ("number_history", "valid_from"),
        ("number_changes", "changed_at"),
    ]
}
# What an import reads back: the snapshots; history is theirs by rebuilding it.
IMPORTS = {
    "snapshots": "snapshot_id, workspace_id, taken_at, total_records, row_count, page_count, "
    "run_id",
    "number_snapshots": "snapshot_id, workspace_id, taken_at, number, sid, is_available, country",
}
MARKER = ".synthflow-export.json"
STAGING = ".synthflow-export-staging"


class ExportError(UserError):
    """The export was refused or could not be written; what DIR held is as it was."""


def export_parquet(con: duckdb.DuckDBPyConnection, directory: Path) -> dict[str, int]:
    """Replace this command's previous export in `directory` whole; returns rows per table."""
    require_workspaces(con)
    lock = _locked(directory)
    try:
        for table in EXPORTS:
            _refuse_unless_ours(directory / table)
        staging = directory / STAGING
        _refuse_unless_ours(staging, listed_only=False)  # a killed export's leftover is ours
        shutil.rmtree(staging, ignore_errors=True)
        try:
            staging.mkdir()
            _write_marker(staging)
            written = {table: _write(con, table, staging) for table in EXPORTS}
            _swap_in(directory, staging)
        except (OSError, duckdb.IOException) as error:
            reason = getattr(error, "strerror", None) or str(error)
            raise ExportError(
                f"could not write the export in {directory} ({reason}); nothing there was "
                "changed. Make the folder writable, or export elsewhere"
            ) from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return written
    finally:
        os.close(lock)


def import_parquet(con: duckdb.DuckDBPyConnection, directory: Path) -> dict[str, int]:
    """Fill an empty warehouse from an export in one transaction; returns rows per table."""
    for table in IMPORTS:
        if not (directory / table / MARKER).is_file():
            raise ExportError(
                f"{directory} holds no export of {table}; name a folder `synthflow-numbers "
                "export` wrote"
            )
    if stored := con.execute("SELECT count(*) FROM synthflow.snapshots").fetchone()[0]:
        raise ExportError(
            f"the warehouse already holds {stored} snapshots; an import fills an empty one "
            "(point the configuration at a new file or lake)"
        )

    def load() -> dict[str, int]:
        counts = {}
        for table, columns in IMPORTS.items():
            files = sql_literal(str(directory / table / "**" / "*.parquet"))
            counts[table] = con.execute(
                f"INSERT INTO synthflow.{table} ({columns}) SELECT {columns} FROM read_parquet("
                f"{files}, hive_partitioning = true, hive_types = {{'workspace_id': VARCHAR}})"
            ).fetchone()[0]
        rebuild_history(con, None)
        return counts

    return committed(con, load, f"import {directory}")


def _locked(directory: Path) -> int:
    """DIR, created if missing (not its parents: likely a typo), locked till closed or its process
    dies: a killed export never blocks the next, which removes what it left."""
    if directory.exists() and not directory.is_dir():
        raise ExportError(
            f"{directory} is a file, and an export is a folder of Parquet files; "
            "export to a new folder or to one an earlier export wrote"
        )
    if not directory.parent.is_dir():
        raise ExportError(
            f"the folder {directory.parent} does not exist; create it, or export elsewhere"
        )
    try:
        directory.mkdir(exist_ok=True)
        fd = os.open(directory, os.O_RDONLY)
    except OSError as error:
        raise ExportError(
            f"cannot create or open {directory} ({error.strerror}); export to a writable place"
        ) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise ExportError(
            f"another export is writing to {directory}; let it finish and run again"
        ) from None
    return fd


def _entries(folder: Path) -> list[str]:
    """Everything under the folder (symbolic links not followed), as sorted relative paths."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


def _write_marker(folder: Path) -> None:
    (folder / MARKER).write_text(json.dumps({"written": _entries(folder)}))


def _refuse_unless_ours(folder: Path, *, listed_only: bool = True) -> None:
    """Refuse a folder whose marker is missing or (`listed_only`) does not list all it holds."""
    if not os.path.lexists(folder):
        return
    try:
        listed = set(json.loads((folder / MARKER).read_text())["written"]) | {MARKER}
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    if listed is None or folder.is_symlink():
        raise ExportError(
            f"{folder} was not written by `synthflow-numbers export`, which would replace it; "
            "move it away or export to another folder"
        )
    if listed_only and (strangers := [e for e in _entries(folder) if e not in listed]):
        raise ExportError(
            f"{folder / strangers[0]} was not written by `synthflow-numbers export`, which "
            f"would replace {folder}; move it out, or export to another folder"
        )


def _write(con: duckdb.DuckDBPyConnection, table: str, staging: Path) -> int:
    """Write the table's rows into a new folder with its marker; returns the rows written."""
    (staging / table).mkdir()
    target = sql_literal(str(staging / table))
    options = "(FORMAT parquet, PARTITION_BY (workspace_id, date))"
    count = con.execute(f"COPY ({EXPORTS[table]}) TO {target} {options}").fetchone()[0]
    _write_marker(staging / table)
    return count


def _swap_in(directory: Path, staging: Path) -> None:
    """Swap in every staged table (the old ones go with the staging folder), or on failure none."""
    moved: list[tuple[Path, Path]] = []
    try:
        for table in EXPORTS:
            if (directory / table).exists():
                (directory / table).rename(staging / f"replaced-{table}")
                moved.append((directory / table, staging / f"replaced-{table}"))
            (staging / table).rename(directory / table)
            moved.append((staging / table, directory / table))
    except OSError:
        for source, target in reversed(moved):
            target.rename(source)
        raise
