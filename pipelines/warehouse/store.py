"""Opening the DuckDB file and storing snapshots: the one way data gets into the warehouse.

DuckDB lets one process write a file at a time. A writer that finds the file held waits a
bounded time, then fails with a message that names the process holding it. A snapshot is
stored whole, with its history update, in one transaction (shared with other snapshots
stored at the same moment); storing the same snapshot_id again replaces it, so a retried
step stores it once.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import duckdb
import pyarrow as pa

from pipelines.warehouse.history import apply_snapshot
from pipelines.warehouse.schema import ensure_schema

LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


class DatabaseLockedError(Exception):
    """Another process holds the DuckDB file for longer than we were willing to wait."""


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
    path: Path, *, read_only: bool = False, lock_timeout_s: float = 60.0
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the file, waiting up to `lock_timeout_s` while another process holds it.

    Writers get the schema created; the connection is closed however the body ends.
    """
    path = Path(path)
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + lock_timeout_s
    delay = 0.05
    while True:
        try:
            con = duckdb.connect(str(path), read_only=read_only)
            break
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise
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
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


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


def store_snapshots(
    con: duckdb.DuckDBPyConnection, listings: Sequence[tuple[SnapshotRow, pa.Table]]
) -> list[dict[str, int]]:
    """Store listings and bring history up to date, all in one transaction (all or nothing).

    Returns each listing's change counts. Storing several at once saves a commit each, which
    is most of the cost of storing a small listing.
    """
    con.execute("BEGIN TRANSACTION")
    try:
        changes = [_store(con, snapshot, numbers) for snapshot, numbers in listings]
        con.execute("COMMIT")
    except BaseException:
        con.execute("ROLLBACK")
        raise
    return changes


def _store(
    con: duckdb.DuckDBPyConnection, snapshot: SnapshotRow, numbers: pa.Table
) -> dict[str, int]:
    con.execute(
        "DELETE FROM synthflow.number_snapshots WHERE snapshot_id = ?", [snapshot.snapshot_id]
    )
    con.execute("DELETE FROM synthflow.snapshots WHERE snapshot_id = ?", [snapshot.snapshot_id])
    con.register("listing_rows", numbers)
    con.execute(
        """
        INSERT INTO synthflow.number_snapshots
            (snapshot_id, workspace_id, taken_at, number, sid, is_available, country)
        SELECT snapshot_id, workspace_id, taken_at, number, sid, is_available, country
        FROM listing_rows
        """
    )
    con.unregister("listing_rows")
    con.execute(
        "INSERT INTO synthflow.snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            snapshot.snapshot_id,
            snapshot.workspace_id,
            snapshot.taken_at,
            snapshot.total_records,
            snapshot.row_count,
            snapshot.page_count,
            snapshot.run_id,
        ],
    )
    return apply_snapshot(con, snapshot.snapshot_id)
