"""Derive `number_history` (SCD2) and `number_changes` from the stored snapshots.

Both are a function of the stored snapshots, and one SQL definition of a change (what differs
between a snapshot and its workspace's snapshot before, `sql/history_changes.sql`) serves
both ways of bringing them up to date. `apply_snapshot` steps: a snapshot newer than every
one applied for its workspace, while history reflects exactly the workspace's other stored
snapshots, costs what its listing costs, however long the history behind it. Anything else (an
older snapshot, one stored again with other rows, one stored but never applied) rebuilds the
workspace, exact by construction. `synthflow.history_applied` records what history reflects.

`apply_snapshots` lets a group of snapshots of distinct workspaces (a run's) cost about the
statements of one. None of these functions begins or ends a transaction (call them inside one),
except `rebuild_history_committed`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import cache
from typing import NamedTuple

import duckdb

from pipelines.user_errors import UserError
from pipelines.warehouse.connection import committed
from pipelines.warehouse.schema import has_table, read_sql

CHANGE_TYPES: tuple[str, ...] = ("added", "removed", "assigned", "released", "sid_changed")

_NAME_LINE = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)
_IN_SCOPE = "$ids::VARCHAR[] IS NULL OR list_contains($ids::VARCHAR[], workspace_id)"


class UnknownSnapshotError(LookupError):
    """apply_snapshot was given a snapshot_id that synthflow.snapshots does not hold."""


class UnknownWorkspaceError(UserError):
    """A rebuild named a workspace the database holds nothing of; nothing was rebuilt."""


class _Plan(NamedTuple):
    """How history catches up with a snapshot: "none", "step" or "rebuild" (its workspace and
    the one it was applied to before, `applied_to`)."""

    snapshot_id: str
    workspace_id: str
    action: str
    applied_to: str | None


@cache
def _sql() -> dict[str, str]:
    """The named statements of `history_step.sql`, and the script `changes`."""
    parts = _NAME_LINE.split(read_sql("history_step.sql"))
    named = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    return {**named, "changes": read_sql("history_changes.sql")}


def ensure_history_state(con: duckdb.DuckDBPyConnection) -> None:
    """Create the bookkeeping table `synthflow.history_applied` where missing (only then: on a
    DuckLake, writing its description again would conflict with every other writer)."""
    if not has_table(con, "history_applied"):
        con.execute(read_sql("history_state.sql"))


def apply_snapshot(con: duckdb.DuckDBPyConnection, snapshot_id: str) -> dict[str, int]:
    """Bring number_history and number_changes up to date with one stored snapshot.

    Returns the count of each change type (all of CHANGE_TYPES) now attributed to it. Applying
    it again with the same rows writes nothing and returns the same counts.
    """
    return apply_snapshots(con, [snapshot_id])[0]


def apply_snapshots(
    con: duckdb.DuckDBPyConnection, snapshot_ids: Sequence[str]
) -> list[dict[str, int]]:
    """`apply_snapshot` for several snapshots at once, each touching workspaces none of the
    others touches (its own, and the one it was applied under before), as a run's snapshots
    do: the history and counts that applying them one at a time gives. Snapshots that share a
    workspace or an id are refused (ValueError): apply those one at a time, in order.
    """
    if isinstance(snapshot_ids, str):
        raise TypeError("snapshot_ids takes a sequence of snapshot ids, not one string")
    if not snapshot_ids:
        return []
    ensure_history_state(con)
    plans = _plans(con, list(snapshot_ids))
    touched = [_workspaces([plans[snapshot_id]]) for snapshot_id in snapshot_ids]
    if len(plans) < len(snapshot_ids) or len(set().union(*touched)) < sum(map(len, touched)):
        raise ValueError(
            "a group takes snapshots of distinct workspaces and snapshot_ids; these share one: "
            "store or apply them one at a time, in order"
        )
    counts = _apply_together(con, [plans[snapshot_id] for snapshot_id in snapshot_ids])
    return [counts[snapshot_id] for snapshot_id in snapshot_ids]


def rebuild_history(
    con: duckdb.DuckDBPyConnection, workspace_ids: Sequence[str] | None = None
) -> dict[str, int]:
    """Recompute number_history and number_changes from the stored snapshots alone, for every
    workspace (None) or those named, leaving others as they are. Returns their change counts."""
    if isinstance(workspace_ids, str):
        raise TypeError("workspace_ids takes a sequence of workspace ids, not one string")
    ensure_history_state(con)
    scope = {"workspace_ids": None if workspace_ids is None else sorted(set(workspace_ids))}
    _rebuild(con, scope["workspace_ids"])
    return _counts(con.execute(_sql()["workspace_counts"], scope).fetchall())


def rebuild_history_committed(
    con: duckdb.DuckDBPyConnection, workspace_ids: Sequence[str] | None = None
) -> dict[str, int]:
    """`rebuild_history` in its own transaction: committed whole, or rolled back on any error.
    A workspace named that has no snapshots, history or settings is refused (a typo would
    otherwise rebuild nothing and say it did)."""
    if workspace_ids is not None:
        known = {row[0] for row in con.execute(_sql()["known_workspaces"]).fetchall()}
        if unknown := [w for w in dict.fromkeys(workspace_ids) if w not in known]:
            raise UnknownWorkspaceError(
                f"workspace {', '.join(unknown)}: the database holds no snapshots, history or "
                "settings of it; nothing was rebuilt. Check the ID (the stored ones: "
                "synthflow-numbers query 'SELECT workspace_id FROM synthflow.workspaces')"
            )
    rebuilt = ", ".join(workspace_ids) if workspace_ids is not None else "every workspace"
    return committed(
        con, lambda: rebuild_history(con, workspace_ids), f"rebuild-history: {rebuilt}"
    )


def _workspaces(plans: Iterable[_Plan]) -> set[str]:
    """The workspaces whose history applying these plans may change."""
    return {w for plan in plans for w in (plan.workspace_id, plan.applied_to) if w is not None}


def _plans(con: duckdb.DuckDBPyConnection, snapshot_ids: list[str]) -> dict[str, _Plan]:
    """Each snapshot's plan against history as it is now, from one query for them all."""
    found = con.execute(_sql()["plan"], {"snapshot_ids": snapshot_ids}).fetchall()
    plans = {row[0]: _Plan(*row) for row in found}
    for snapshot_id in snapshot_ids:
        if snapshot_id not in plans:
            raise UnknownSnapshotError(
                f"snapshot {snapshot_id!r} is not in synthflow.snapshots; store the snapshot "
                "(its synthflow.snapshots row and its number rows) before applying it"
            )
    return plans


def _apply_together(
    con: duckdb.DuckDBPyConnection, plans: list[_Plan]
) -> dict[str, dict[str, int]]:
    """Apply snapshots that touch no workspace in common; each one's counts by snapshot_id."""
    rebuilt = _workspaces(plan for plan in plans if plan.action == "rebuild")
    if rebuilt:
        _rebuild(con, sorted(rebuilt))
    _step(con, [plan for plan in plans if plan.action == "step"])
    ids = [plan.snapshot_id for plan in plans]
    found: dict[str, list[tuple[str, int]]] = {snapshot_id: [] for snapshot_id in ids}
    for snapshot_id, change_type, count in con.execute(
        _sql()["snapshot_counts"], {"snapshot_ids": ids}
    ).fetchall():
        found[snapshot_id].append((change_type, count))
    return {snapshot_id: _counts(rows) for snapshot_id, rows in found.items()}


def _step(con: duckdb.DuckDBPyConnection, plans: list[_Plan]) -> None:
    """Add snapshots of distinct workspaces, each newer than all its workspace's applied ones."""
    if plans:
        workspace_ids = [plan.workspace_id for plan in plans]
        _derive(con, workspace_ids, [plan.snapshot_id for plan in plans])


def _rebuild(con: duckdb.DuckDBPyConnection, workspace_ids: list[str] | None) -> None:
    """Recompute history, changes and bookkeeping for these workspaces (None: all)."""
    for table in ("number_history", "number_changes", "history_applied"):
        con.execute(f"DELETE FROM synthflow.{table} WHERE {_IN_SCOPE}", {"ids": workspace_ids})
    _derive(con, workspace_ids, None)


def _derive(
    con: duckdb.DuckDBPyConnection, workspace_ids: list[str] | None, snapshot_ids: list[str] | None
) -> None:
    """Add these snapshots (None: all) of these workspaces to history, each against the
    workspace's snapshot before it."""
    scope = {"workspace_ids": workspace_ids, "snapshot_ids": snapshot_ids}
    con.execute(_sql()["pairs"], scope)
    con.execute(_sql()["changes"])


def _counts(rows: list[tuple[str, int]]) -> dict[str, int]:
    """Counts per change type from (change_type, count) rows, with every type present."""
    return {**dict.fromkeys(CHANGE_TYPES, 0), **dict(rows)}
