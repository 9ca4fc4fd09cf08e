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

from pipelines.warehouse.history import apply_snapshot, apply_snapshots, storable_together
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
SELECT snapshot_id, workspace_id, taken_at, number, sid, is_available, country
FROM listing_rows
"""


def store_snapshots(
    con: duckdb.DuckDBPyConnection, listings: Sequence[tuple[SnapshotRow, pa.Table]]
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
    con: duckdb.DuckDBPyConnection, listings: Sequence[tuple[SnapshotRow, pa.Table]]
) -> None:
    """Replace these snapshots (distinct snapshot_ids): one statement per table and step."""
    if not listings:
        return
    ids = {"snapshot_ids": [snapshot.snapshot_id for snapshot, _ in listings]}
    con.execute(DELETE_NUMBER_ROWS, ids)
    con.execute(DELETE_SNAPSHOT_ROWS, ids)
    # The tables (zero-copy) as one: one insert, whose commit costs less than many.
    # listing_table gives every listing the same schema; other callers' tables go by schema.
    by_schema: dict[pa.Schema, list[pa.Table]] = {}
    for _, numbers in listings:
        by_schema.setdefault(numbers.schema, []).append(numbers)
    for tables in by_schema.values():
        con.register("listing_rows", pa.concat_tables(tables))
        con.execute(INSERT_NUMBER_ROWS)
        con.unregister("listing_rows")
    con.executemany(
        "INSERT INTO synthflow.snapshots VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            [
                snapshot.snapshot_id,
                snapshot.workspace_id,
                snapshot.taken_at,
                snapshot.total_records,
                snapshot.row_count,
                snapshot.page_count,
                snapshot.run_id,
            ]
            for snapshot, _ in listings
        ],
    )
