"""Derive `number_history` (SCD2) and `number_changes` from the stored snapshots.

`apply_snapshot` brings both tables up to date with one stored snapshot. When the snapshot is
newer than every snapshot applied for its workspace, and history reflects exactly the
workspace's other stored snapshots, it takes one set-based incremental step: a full join of
the workspace's open versions with the new listing (found through DuckDB's zone maps on
taken_at), so its cost follows the size of the listing, not the number of snapshots behind
it. Anything else (a snapshot older than the newest applied, one re-stored with other rows,
stored snapshots that were never applied or have gone) rebuilds that one workspace from its
snapshots, which is exact by construction. `rebuild_history` does the same for any set of
workspaces. Both paths name changes with the same SQL, and the property tests hold them to
the same answer. `synthflow.history_applied` records what history reflects.

Neither function begins, commits or rolls back: they run inside the caller's transaction,
which is what makes a call atomic (call them inside one). The SQL lives in
`sql/history_*.sql`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import duckdb

from pipelines.warehouse.schema import read_sql

CHANGE_TYPES: tuple[str, ...] = ("added", "removed", "assigned", "released", "sid_changed")

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


class UnknownSnapshotError(LookupError):
    """apply_snapshot was given a snapshot_id that synthflow.snapshots does not hold."""


@dataclass(frozen=True)
class _Plan:
    """What apply_snapshot found out about a snapshot before touching history."""

    row_count: int
    fingerprint: int
    others_in_step: bool
    last_applied_us: int | None
    times_applied: int
    applied_workspace_id: str | None
    applied_unchanged: bool

    def action(self, taken_at_us: int) -> Literal["none", "step", "rebuild"]:
        """Nothing when history already reflects exactly this snapshot; one incremental step
        when history reflects exactly the workspace's other snapshots, all older; otherwise
        a rebuild of the workspace (and of the one the snapshot was applied to before)."""
        if not self.others_in_step:
            return "rebuild"
        if self.times_applied == 1 and self.applied_unchanged:
            return "none"
        newest = self.last_applied_us is None or taken_at_us > self.last_applied_us
        return "step" if self.times_applied == 0 and newest else "rebuild"


@cache
def _sql(file_name: str) -> str:
    return read_sql(file_name)


@cache
def _statements(file_name: str) -> dict[str, str]:
    """The statements of a `history_*.sql` file, keyed by their `-- name:` line."""
    parts = _NAME_LINE.split(_sql(file_name))
    return {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}


def ensure_history_state(con: duckdb.DuckDBPyConnection) -> None:
    """Create the bookkeeping table `synthflow.history_applied` where missing."""
    con.execute(_sql("history_state.sql"))


def apply_snapshot(con: duckdb.DuckDBPyConnection, snapshot_id: str) -> dict[str, int]:
    """Bring number_history and number_changes up to date with one stored snapshot.

    Returns the count of each change type (all of CHANGE_TYPES, zeros included) that this
    snapshot shows, i.e. the number_changes rows now attributed to it. Applying a snapshot
    again with the same rows writes nothing and returns the same counts as the first time.
    """
    ensure_history_state(con)
    step = _statements("history_step.sql")
    target = con.execute(step["target"], {"snapshot_id": snapshot_id}).fetchone()
    if target is None:
        raise UnknownSnapshotError(
            f"snapshot {snapshot_id!r} is not in synthflow.snapshots; store the snapshot "
            "(its synthflow.snapshots row and its number rows) before applying it"
        )
    workspace_id, taken_at_us = target
    where = {"snapshot_id": snapshot_id, "workspace_id": workspace_id, "taken_at_us": taken_at_us}
    plan = _Plan(*con.execute(step["plan"], where).fetchone())

    action = plan.action(taken_at_us)
    if action == "step":
        _step(con, where, plan)
    elif action == "rebuild":
        _rebuild(con, sorted({workspace_id, plan.applied_workspace_id} - {None}))
    return _counts(con.execute(step["snapshot_counts"], where).fetchall())


def rebuild_history(
    con: duckdb.DuckDBPyConnection, workspace_ids: Sequence[str] | None = None
) -> dict[str, int]:
    """Recompute number_history and number_changes from the stored snapshots alone.

    For every workspace (None) or only those named; other workspaces are left as they are.
    Returns the count of each change type now recorded for the rebuilt workspaces.
    """
    if isinstance(workspace_ids, str):
        raise TypeError("workspace_ids takes a sequence of workspace ids, not one string")
    ensure_history_state(con)
    targets = None if workspace_ids is None else sorted(set(workspace_ids))
    _rebuild(con, targets)
    rebuild = _statements("history_rebuild.sql")
    return _counts(con.execute(rebuild["workspace_counts"], {"workspace_ids": targets}).fetchall())


def _step(con: duckdb.DuckDBPyConnection, where: dict[str, object], plan: _Plan) -> None:
    """Apply a snapshot newer than every applied one of its workspace, touching open versions."""
    step = _statements("history_step.sql")
    con.execute(step["transitions"], {**where, "previous_taken_at_us": plan.last_applied_us})
    con.execute(_sql("history_changes.sql"))
    con.execute(step["close_versions"], {"workspace_id": where["workspace_id"]})
    con.execute(step["open_versions"])
    marked = {**where, "row_count": plan.row_count, "fingerprint": plan.fingerprint}
    con.execute(step["mark_applied"], marked)
    _drop_temp_tables(con, "history_transitions")


def _rebuild(con: duckdb.DuckDBPyConnection, workspace_ids: list[str] | None) -> None:
    """Recompute history, changes and bookkeeping for these workspaces (None: all)."""
    rebuild = _statements("history_rebuild.sql")
    scope = {"workspace_ids": workspace_ids}
    for name in ("forget_history", "forget_changes", "forget_applied", "observations"):
        con.execute(rebuild[name], scope)
    con.execute(rebuild["transitions"])
    con.execute(_sql("history_changes.sql"))
    con.execute(rebuild["versions"])
    con.execute(rebuild["mark_applied"], scope)
    _drop_temp_tables(con, "history_transitions", "history_observations")


def _drop_temp_tables(con: duckdb.DuckDBPyConnection, *tables: str) -> None:
    """Drop the working tables of a step or rebuild (connection-local, never user-named)."""
    for table in tables:
        con.execute(f"DROP TABLE IF EXISTS temp.{table}")


def _counts(rows: list[tuple[str, int]]) -> dict[str, int]:
    """Counts per change type from (change_type, count) rows, with every type present."""
    counts = dict.fromkeys(CHANGE_TYPES, 0)
    counts.update(dict(rows))
    return counts
