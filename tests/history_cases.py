"""Shared fixtures for the history and view tests: an in-memory warehouse, a snapshot store
that writes the way the loader does (one snapshot at a time, or a group through
`store_snapshots`), and readers that return the history tables as sorted tuples so that tests
compare plain values."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import duckdb
import pandas as pd
import pyarrow as pa

from pipelines.normalize import listing_frame
from pipelines.warehouse.connection import ensure_schema
from pipelines.warehouse.history import apply_snapshot, ensure_history_state
from pipelines.warehouse.store import SnapshotRow, store_snapshots

T0 = datetime(2025, 1, 1, tzinfo=UTC)

# number -> (is_available, sid)
Listing = Mapping[str, tuple[bool, str | None]]


def at(minutes: int) -> datetime:
    """A taken_at `minutes` after T0."""
    return T0 + timedelta(minutes=minutes)


def new_warehouse() -> duckdb.DuckDBPyConnection:
    """An empty in-memory warehouse with every table and view, reading times in UTC. One
    thread: the cases are tiny, so more threads only add overhead."""
    con = duckdb.connect(":memory:", config={"threads": 1})
    con.execute("SET TimeZone = 'UTC'")
    ensure_schema(con)
    ensure_history_state(con)
    return con


def store_snapshot(
    con: duckdb.DuckDBPyConnection,
    snapshot_id: str,
    workspace_id: str,
    taken_at: datetime,
    listing: Listing,
    countries: Mapping[str, str] | None = None,
) -> None:
    """Store a complete listing as the loader does: replace any snapshot with this id, then
    write its synthflow.snapshots row and one synthflow.number_snapshots row per number."""
    con.execute("DELETE FROM synthflow.number_snapshots WHERE snapshot_id = ?", [snapshot_id])
    con.execute("DELETE FROM synthflow.snapshots WHERE snapshot_id = ?", [snapshot_id])
    con.execute(
        "INSERT INTO synthflow.snapshots VALUES (?, ?, ?, ?, ?, 1, 'test-run')",
        [snapshot_id, workspace_id, taken_at, len(listing), len(listing)],
    )
    numbers = list(listing)
    con.execute(
        "INSERT INTO synthflow.number_snapshots SELECT $snapshot_id, $workspace_id, $taken_at, "
        "unnest($numbers::VARCHAR[]), unnest($sids::VARCHAR[]), unnest($available::BOOLEAN[]), "
        "unnest($countries::VARCHAR[])",
        {
            "snapshot_id": snapshot_id,
            "workspace_id": workspace_id,
            "taken_at": taken_at,
            "numbers": numbers,
            "sids": [listing[number][1] for number in numbers],
            "available": [listing[number][0] for number in numbers],
            "countries": [(countries or {}).get(number) for number in numbers],
        },
    )


def load_snapshot(
    con: duckdb.DuckDBPyConnection,
    snapshot_id: str,
    workspace_id: str,
    taken_at: datetime,
    listing: Listing,
    countries: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Store a listing and apply it in one transaction, as the loader does; returns
    apply_snapshot's counts."""
    con.execute("BEGIN TRANSACTION")
    store_snapshot(con, snapshot_id, workspace_id, taken_at, listing, countries)
    result = apply_snapshot(con, snapshot_id)
    con.execute("COMMIT")
    return result


# (snapshot_id, workspace_id, taken_at, listing)
SnapshotCase = tuple[str, str, datetime, Listing]


def listing_rows(
    snapshot_id: str, workspace_id: str, taken_at: datetime, listing: Listing
) -> tuple[SnapshotRow, pd.DataFrame]:
    """A listing as the snapshot step hands it to `store_snapshots`: its row and its frame."""
    numbers = list(listing)
    read = pa.table(
        {
            "number": pa.array(numbers, pa.string()),
            "sid": pa.array([listing[number][1] for number in numbers], pa.string()),
            "is_available": pa.array([listing[number][0] for number in numbers], pa.bool_()),
        }
    )
    frame = listing_frame(read, known=dict.fromkeys(numbers))  # no country: none is looked up
    row = SnapshotRow(snapshot_id, workspace_id, taken_at, len(numbers), len(numbers), 1, "test")
    return row, frame


def store_group(
    con: duckdb.DuckDBPyConnection, snapshots: Sequence[SnapshotCase]
) -> list[dict[str, int]]:
    """Store and apply listings in one `store_snapshots` call, as a run stores a group."""
    return store_snapshots(con, [listing_rows(*snapshot) for snapshot in snapshots])


def one_at_a_time(
    snapshots: Sequence[SnapshotCase],
) -> tuple[list[dict[str, int]], list[HistoryRow], list[ChangeRow]]:
    """The reference: each listing stored and applied on its own, in order, in a fresh
    warehouse; each one's counts, then the history and changes it ends with."""
    con = new_warehouse()
    try:
        counts = [load_snapshot(con, *snapshot) for snapshot in snapshots]
        return counts, history_rows(con), change_rows(con)
    finally:
        con.close()


def sorted_rows(rows: list[tuple]) -> list[tuple]:
    """Rows in a stable order, NULLs (None) first in each column."""
    return sorted(
        rows, key=lambda row: tuple((v is not None, v if v is not None else 0) for v in row)
    )


HistoryRow = tuple[str, str, bool, str | None, datetime, datetime | None, bool]
ChangeRow = tuple[str, str, datetime, datetime | None, str, str, bool | None, bool | None]


def history_rows(con: duckdb.DuckDBPyConnection) -> list[HistoryRow]:
    """number_history as (workspace_id, number, is_available, sid, valid_from, valid_to,
    is_current), sorted."""
    rows = con.execute(
        "SELECT workspace_id, number, is_available, sid, valid_from, valid_to, is_current "
        "FROM synthflow.number_history"
    ).fetchall()
    return sorted_rows(rows)


def change_rows(con: duckdb.DuckDBPyConnection) -> list[ChangeRow]:
    """number_changes as (workspace_id, number, changed_at, previous_taken_at, snapshot_id,
    change_type, was_available, is_available), sorted."""
    rows = con.execute(
        "SELECT workspace_id, number, changed_at, previous_taken_at, snapshot_id, change_type, "
        "was_available, is_available FROM synthflow.number_changes"
    ).fetchall()
    return sorted_rows(rows)


def counts(**nonzero: int) -> dict[str, int]:
    """An apply_snapshot result: the given change counts, every other type zero."""
    result = {"added": 0, "removed": 0, "assigned": 0, "released": 0, "sid_changed": 0}
    result.update(nonzero)
    return result
