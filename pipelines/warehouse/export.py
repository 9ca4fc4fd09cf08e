"""Export to Parquet, partitioned by workspace and date, for any warehouse or engine.

Layout: `DIR/<table>/workspace_id=<id>/date=<YYYY-MM-DD>/*.parquet` (Hive partitioning), the
date being that of `taken_at` (snapshots), `valid_from` (history) or `changed_at` (changes),
in UTC.

An export never deletes what it did not write. Each table folder it writes holds a marker,
`.synthflow-export.json`, that lists what it wrote there (readers skip dot-files); a table
folder without the marker, or holding anything the marker does not list, is refused. The new
export is written whole into a staging folder inside DIR (same filesystem, so renames), then
swapped in: every table, or on failure none, and the staging folder is removed. Nothing else
in DIR is touched. One export writes to a DIR at a time, under a lock on the folder that the
system releases when its process dies: an export that was killed never blocks the next, which
removes the staging folder it left.
"""

import fcntl
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from pipelines.user_errors import UserError

EXPORTS = {
    "snapshots": "SELECT *, CAST(timezone('UTC', taken_at) AS DATE) AS date "
    "FROM synthflow.snapshots",
    "number_snapshots": "SELECT *, CAST(timezone('UTC', taken_at) AS DATE) AS date "
    "FROM synthflow.number_snapshots",
    "number_history": "SELECT *, CAST(timezone('UTC', valid_from) AS DATE) AS date "
    "FROM synthflow.number_history",
    "number_changes": "SELECT *, CAST(timezone('UTC', changed_at) AS DATE) AS date "
    "FROM synthflow.number_changes",
}
MARKER = ".synthflow-export.json"
STAGING = ".synthflow-export-staging"
REPLACED = "replaced"  # inside the staging folder: the previous export, once swapped out


class ExportError(UserError):
    """The export was refused or could not be written; what DIR held is as it was. The
    message says why and what to do."""


def export_parquet(con: duckdb.DuckDBPyConnection, directory: Path) -> dict[str, int]:
    """Write every table under `directory`, replacing this command's previous export there
    whole; returns the rows written per table."""
    _ensure_folder(directory)
    with _exclusive(directory):
        for table in EXPORTS:
            _refuse_unless_ours(directory / table)
        staging = directory / STAGING
        if staging.exists():  # left by an export that was killed: ours if it holds the marker
            _refuse_unless_ours(staging, listed_only=False)
            shutil.rmtree(staging)
        try:
            staging.mkdir()
            _write_marker(staging)
            written = {
                table: _write_table(con, query, staging / table) for table, query in EXPORTS.items()
            }
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


def _ensure_folder(directory: Path) -> None:
    """DIR, created when missing (but not its parents: a missing parent is likely a typo)."""
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
    except OSError as error:
        raise ExportError(
            f"cannot create {directory} ({error.strerror}); export to a writable place"
        ) from None


@contextmanager
def _exclusive(directory: Path) -> Iterator[None]:
    """Hold the lock on DIR for the export (released at exit, or by the system at death)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as error:
        raise ExportError(
            f"cannot open {directory} ({error.strerror}); export to a readable, writable place"
        ) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ExportError(
                f"another export is writing to {directory}; let it finish and run again"
            ) from None
        yield
    finally:
        os.close(fd)


def _entries(folder: Path) -> list[str]:
    """Everything under the folder (symbolic links not followed), as sorted relative paths."""
    return sorted(path.relative_to(folder).as_posix() for path in folder.rglob("*"))


def _write_marker(folder: Path) -> None:
    """Mark the folder as this command's own and list what is in it now."""
    (folder / MARKER).write_text(json.dumps({"written": _entries(folder)}))


def _refuse_unless_ours(folder: Path, *, listed_only: bool = True) -> None:
    """Refuse a folder this command did not write, or (`listed_only`) that holds anything its
    marker does not list: replacing it would delete what someone else put there."""
    if not folder.exists() and not folder.is_symlink():
        return
    try:
        listed = set(json.loads((folder / MARKER).read_text())["written"])
        ours = folder.is_dir() and not folder.is_symlink()
    except (OSError, ValueError, KeyError, TypeError):
        ours = False
    if not ours:
        raise ExportError(
            f"{folder} was not written by `synthflow-numbers export`, which would replace it; "
            "move it away or export to another folder"
        )
    strangers = [entry for entry in _entries(folder) if entry not in listed | {MARKER}]
    if listed_only and strangers:
        raise ExportError(
            f"{folder / strangers[0]} was not written by `synthflow-numbers export`, which "
            f"would replace {folder}; move it out, or export to another folder"
        )


def _literal(path: Path) -> str:
    # COPY takes its target as a literal, not a parameter: quote it as SQL does.
    return "'" + str(path).replace("'", "''") + "'"


def _write_table(con: duckdb.DuckDBPyConnection, query: str, target: Path) -> int:
    """Write one table's rows into a new folder with its marker; returns the rows written."""
    target.mkdir()
    count = con.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]
    if count:
        con.execute(
            f"COPY ({query}) TO {_literal(target)} "
            "(FORMAT parquet, PARTITION_BY (workspace_id, date))"
        )
    _write_marker(target)
    return count


def _swap_in(directory: Path, staging: Path) -> None:
    """Put every staged table in place of the previous one (moved into the staging folder, to
    go with it), or on failure none: what was moved is moved back."""
    (staging / REPLACED).mkdir()
    moved: list[tuple[Path, Path]] = []
    try:
        for table in EXPORTS:
            if (directory / table).exists():
                (directory / table).rename(staging / REPLACED / table)
                moved.append((directory / table, staging / REPLACED / table))
            (staging / table).rename(directory / table)
            moved.append((staging / table, directory / table))
    except OSError:
        for source, target in reversed(moved):
            target.rename(source)
        raise
