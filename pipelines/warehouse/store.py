"""Storing snapshots: the one way data gets into the warehouse.

A snapshot is stored whole with its history update in one transaction; the same snapshot_id
stored again replaces it, so a retried step stores it once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass
from datetime import datetime

import duckdb
import pandas as pd

from pipelines.config import Workspace
from pipelines.warehouse.connection import committed, cursor
from pipelines.warehouse.history import apply_snapshots


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
    with cursor(con) as own:
        rows = own.execute(
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
    """Store listings of distinct workspaces (a run's) and bring history up to date, all in one
    transaction (all or nothing): one statement per table for them all, then `apply_snapshots`,
    so a group costs one commit and about the statements of one listing
    (`benchmarks/store_group.py`). Returns each listing's change counts, as storing and applying
    them one at a time gives. Listings that share a workspace or a snapshot_id, or whose ids
    were applied under each other's workspaces, are refused (ValueError), nothing stored.
    """
    ids = [snapshot.snapshot_id for snapshot, _ in listings]
    if len(set(ids)) < len(ids):  # its statements replace by id; workspaces: apply_snapshots
        raise ValueError(
            "a group takes snapshots of distinct workspaces and snapshot_ids; store those of "
            "one workspace one call each, in order"
        )
    run_ids = ", ".join(sorted({snapshot.run_id for snapshot, _ in listings if snapshot.run_id}))

    def store_and_apply() -> list[dict[str, int]]:
        _store(con, listings)
        return apply_snapshots(con, ids)

    return committed(
        con, store_and_apply, f"{len(listings)} snapshot(s) of run {run_ids}", run_id=run_ids
    )


def _store(
    con: duckdb.DuckDBPyConnection, listings: Sequence[tuple[SnapshotRow, pd.DataFrame]]
) -> None:
    """Replace these snapshots: one statement per table and step, every listing's numbers in one
    frame (a statement per listing cost ~2 ms each: 1.9 s of storing 1,000 workspaces of 10
    numbers, 0.4 s in one frame)."""
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


STORED_WORKSPACES = """
SELECT workspace_id, name, base_url FROM synthflow.workspace_settings
WHERE list_contains($ids::VARCHAR[], workspace_id)
"""
FORGET_WORKSPACES = """
DELETE FROM synthflow.workspace_settings WHERE list_contains($ids::VARCHAR[], workspace_id)
"""
RECORD_WORKSPACES = """
INSERT INTO synthflow.workspace_settings (workspace_id, name, base_url)
SELECT unnest($ids::VARCHAR[]), unnest($names::VARCHAR[]), unnest($base_urls::VARCHAR[])
"""


def record_workspaces(con: duckdb.DuckDBPyConnection, workspaces: Sequence[Workspace]) -> None:
    """Write each workspace's name and base URL as the configuration gives them now, in one
    transaction; workspaces not given keep what they had (`synthflow.workspaces` reads them).
    Nothing is written when they are stored so already: on a DuckLake, each run would
    otherwise commit, and meet every other writer's commit of them."""
    ids = [workspace.id for workspace in workspaces]
    names = [workspace.name for workspace in workspaces]
    base_urls = [workspace.base_url for workspace in workspaces]

    def record() -> None:
        stored = con.execute(STORED_WORKSPACES, {"ids": ids}).fetchall()
        if set(stored) == set(zip(ids, names, base_urls, strict=True)):
            return
        con.execute(FORGET_WORKSPACES, {"ids": ids})
        con.execute(RECORD_WORKSPACES, {"ids": ids, "names": names, "base_urls": base_urls})

    committed(con, record, "the workspaces' names and base URLs")
