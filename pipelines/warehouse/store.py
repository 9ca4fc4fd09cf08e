"""Opening the DuckDB file and storing snapshots: the one way data gets into the warehouse.

One process writes the file at a time: a writer that finds it held waits a bounded time, then
names the holder. A snapshot is stored whole with its history update in one transaction; the
same snapshot_id stored again replaces it, so a retried step stores it once.
"""

from __future__ import annotations

import os
import random
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import astuple, dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from pipelines.config import Workspace
from pipelines.user_errors import UserError
from pipelines.warehouse.history import apply_snapshot, apply_snapshots, storable_together
from pipelines.warehouse.schema import ensure_schema

LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


class DatabaseLockedError(UserError):
    """Another process holds the DuckDB file for longer than we were willing to wait."""


class DatabaseUnusableError(UserError):
    """The path holds no synthflow database this connection can use; nothing was changed."""


POINT_AT_IT = "set SYNTHFLOW_DUCKDB_PATH to the synthflow database, or to a new path for `snapshot`"
HAS_SCHEMA = "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'synthflow'"


def _holder(message: str) -> str:
    match = LOCK_HOLDER.search(message)
    if not match:
        return "another process"
    pid = match["pid"]
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        command = match["program"]
    return f"process {pid} ({command[:120]})"


@contextmanager
def connect(
    path: Path,
    *,
    read_only: bool = False,
    must_exist: bool = False,
    lock_timeout_s: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
    memory_limit: str | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the file, waiting up to `lock_timeout_s` while another process holds it.
    Writers get the file and schema created, unless `must_exist`: then, as for readers, a path
    without a synthflow database is refused (DatabaseUnusableError) and left as it was.
    `on_wait` is told once who holds the file, when it has to wait; `memory_limit` (a size
    such as 512MB) caps what DuckDB holds in memory."""
    path = Path(path)
    must_exist = must_exist or read_only
    _check_path(path, read_only=read_only, must_exist=must_exist)
    deadline = time.monotonic() + lock_timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise _unopenable(path, error) from None
            if on_wait:
                on_wait(_holder(str(error)))
                on_wait = None
            if time.monotonic() >= deadline:
                raise DatabaseLockedError(
                    f"the database {path} is in use by {_holder(str(error))}; waited "
                    f"{lock_timeout_s:g} s. Let that process finish (or close that connection) "
                    "and run again, or raise database.lock_timeout_s"
                ) from None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0) * random.uniform(0.8, 1.2)
    try:
        con.execute("SET TimeZone = 'UTC'")  # times are read back in UTC, as stored
        if memory_limit:
            con.execute("SET memory_limit = ?", [memory_limit])
        if must_exist and not con.execute(HAS_SCHEMA).fetchone()[0]:
            raise DatabaseUnusableError(
                f"{path} is a DuckDB file without the synthflow tables; {POINT_AT_IT}"
            )
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


def _check_path(path: Path, *, read_only: bool, must_exist: bool) -> None:
    """Refuse, before DuckDB touches anything, a path it could not open or write as asked.
    A writer needs the file and its folder writable: DuckDB keeps a `.wal` file beside it."""
    if path.is_dir():
        raise DatabaseUnusableError(f"{path} is a folder, not a database file; {POINT_AT_IT}")
    if not path.exists():
        if must_exist:
            raise DatabaseUnusableError(
                f"there is no database at {path} yet; run `synthflow-numbers snapshot` first, "
                "or point SYNTHFLOW_DUCKDB_PATH at the database"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatabaseUnusableError(
                f"cannot create the folder of the database {path}: {error.strerror}; create it "
                "or point SYNTHFLOW_DUCKDB_PATH elsewhere"
            ) from None
    if not read_only and not all(
        os.access(place, os.W_OK) for place in (path.parent, path) if place.exists()
    ):
        raise DatabaseUnusableError(
            f"the database {path} or its folder is read-only (DuckDB writes the file and a "
            ".wal beside it); make both writable or point SYNTHFLOW_DUCKDB_PATH elsewhere"
        )


def _unopenable(path: Path, error: duckdb.IOException) -> DatabaseUnusableError:
    """What DuckDB's refusal to open a file (other than a lock) means for the user."""
    if "not a valid DuckDB database file" in str(error):
        return DatabaseUnusableError(f"{path} is not a DuckDB database file; {POINT_AT_IT}")
    reason = str(error).removeprefix("IO Error: ")
    return DatabaseUnusableError(f"cannot open the database {path}: {reason}; {POINT_AT_IT}")


@dataclass(frozen=True)
class SnapshotRow:
    """The row of `synthflow.snapshots` that describes one stored listing."""

    snapshot_id: str
    workspace_id: str
    taken_at: datetime
    total_records: int
    row_count: int
    page_count: int
    run_id: str | None


NEWEST_SNAPSHOTS = """
SELECT workspace_id, arg_max(snapshot_id, taken_at), max(taken_at)
FROM synthflow.snapshots
WHERE list_contains($workspace_ids::VARCHAR[], workspace_id)
  AND NOT list_contains($snapshot_ids::VARCHAR[], snapshot_id)
GROUP BY workspace_id
"""


def newest_snapshots(
    con: duckdb.DuckDBPyConnection, snapshot_ids: dict[str, str]
) -> dict[str, tuple[str, datetime]]:
    """Each workspace's newest stored (snapshot_id, taken_at), leaving out the snapshot_id given
    for it (the one a run would replace). `snapshot_ids` maps workspace_id to snapshot_id."""
    rows = con.execute(
        NEWEST_SNAPSHOTS,
        {"workspace_ids": list(snapshot_ids), "snapshot_ids": list(snapshot_ids.values())},
    ).fetchall()
    return {workspace_id: (snapshot_id, taken_at) for workspace_id, snapshot_id, taken_at in rows}


def stored_countries(con: duckdb.DuckDBPyConnection, snapshot_id: str) -> dict[str, str | None]:
    """The country stored with each number of a snapshot, on a cursor of its own (any thread)."""
    with con.cursor() as cursor:
        rows = cursor.execute(
            "SELECT number, country FROM synthflow.number_snapshots WHERE snapshot_id = ?",
            [snapshot_id],
        ).fetchall()
    return dict(rows)


# Storing a group: each statement takes every listing of it.
DELETE_NUMBER_ROWS = """
DELETE FROM synthflow.number_snapshots WHERE list_contains($snapshot_ids::VARCHAR[], snapshot_id)
"""
DELETE_SNAPSHOT_ROWS = """
DELETE FROM synthflow.snapshots WHERE list_contains($snapshot_ids::VARCHAR[], snapshot_id)
"""
INSERT_NUMBER_ROWS = """
INSERT INTO synthflow.number_snapshots
    (snapshot_id, workspace_id, taken_at, number, sid, is_available, country)
SELECT snapshot_id, s.workspace_id, s.taken_at, r.number, r.sid, r.is_available, r.country
FROM listing_rows AS r JOIN synthflow.snapshots AS s USING (snapshot_id)
"""


def store_snapshots(
    con: duckdb.DuckDBPyConnection, listings: Sequence[tuple[SnapshotRow, pd.DataFrame]]
) -> list[dict[str, int]]:
    """Store listings and bring history up to date, all in one transaction (all or nothing).

    Returns each listing's change counts, exactly as storing and applying them one at a time in
    this order would. The listings `storable_together` allows (all but one that shares a
    workspace with an earlier one) are stored with one statement per table and applied with
    `apply_snapshots`, the others after them, one at a time: a group costs one commit and
    about the statements of one listing (`benchmarks/store_group.py`).
    """
    con.execute("BEGIN TRANSACTION")
    try:
        together = storable_together(
            con, [(snapshot.snapshot_id, snapshot.workspace_id) for snapshot, _ in listings]
        )
        first = [listing for listing, ok in zip(listings, together, strict=True) if ok]
        _store(con, first)
        counts = iter(apply_snapshots(con, [snapshot.snapshot_id for snapshot, _ in first]))
        changes = []
        for listing, ok in zip(listings, together, strict=True):
            if ok:
                changes.append(next(counts))
            else:  # after every listing it shares a workspace with, as if stored in turn
                _store(con, [listing])
                changes.append(apply_snapshot(con, listing[0].snapshot_id))
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return changes


def _store(
    con: duckdb.DuckDBPyConnection, listings: Sequence[tuple[SnapshotRow, pd.DataFrame]]
) -> None:
    """Replace these snapshots (distinct snapshot_ids): one statement per table and step, every
    listing's numbers in one frame (a statement per listing cost ~2 ms each: 1.9 s of storing
    1,000 workspaces of 10 numbers, 0.4 s in one frame)."""
    if not listings:
        return
    ids = [snapshot.snapshot_id for snapshot, _ in listings]
    con.execute(DELETE_NUMBER_ROWS, {"snapshot_ids": ids})
    con.execute(DELETE_SNAPSHOT_ROWS, {"snapshot_ids": ids})
    con.executemany(  # SnapshotRow's fields are the table's columns, in order
        "INSERT INTO synthflow.snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
        [astuple(snapshot) for snapshot, _ in listings],
    )
    frames = [frame for _, frame in listings]
    rows = pd.concat(frames, keys=ids, names=["snapshot_id", None]).reset_index("snapshot_id")
    con.register("listing_rows", rows)
    con.execute(INSERT_NUMBER_ROWS)
    con.unregister("listing_rows")


# The write-ahead log a run may grow before DuckDB checkpoints on its own.
RUN_CHECKPOINT_THRESHOLD = "1GB"


@contextmanager
def checkpoints_deferred(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """No checkpoint during a run's stores, not one every 16 MB of write-ahead log: each
    writes number_snapshots' primary-key index whole, over half the storing time of a
    million-number run. Every store is still committed to the log; `checkpoint` follows."""
    (threshold,) = con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    con.execute(f"SET checkpoint_threshold = '{RUN_CHECKPOINT_THRESHOLD}'")
    try:
        yield
    finally:
        con.execute(f"SET checkpoint_threshold = '{threshold}'")


def checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    """Write what was committed into the database file, on a cursor of its own. FORCE waits
    for queries on other cursors to finish; a plain CHECKPOINT would fail beside them."""
    with con.cursor() as cursor:
        cursor.execute("FORCE CHECKPOINT")


RECORD_WORKSPACES = """
INSERT OR REPLACE INTO synthflow.workspace_settings (workspace_id, name, base_url)
SELECT unnest($ids::VARCHAR[]), unnest($names::VARCHAR[]), unnest($base_urls::VARCHAR[])
"""


def record_workspaces(con: duckdb.DuckDBPyConnection, workspaces: Sequence[Workspace]) -> None:
    """Write each workspace's name and base URL as the configuration gives them now, in one
    statement; workspaces not given keep what they had (`synthflow.workspaces` reads them)."""
    con.execute(
        RECORD_WORKSPACES,
        {
            "ids": [workspace.id for workspace in workspaces],
            "names": [workspace.name for workspace in workspaces],
            "base_urls": [workspace.base_url for workspace in workspaces],
        },
    )
