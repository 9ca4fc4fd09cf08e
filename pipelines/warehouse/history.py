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

`apply_snapshots` does what `apply_snapshot` does for each of a list of snapshots in turn,
with the same answers, but plans and steps all the snapshots of distinct workspaces at once:
the statements of the step take a list of snapshots (`apply_snapshot` is a list of one), so
a group of listings costs about what one costs. `storable_together` tells the store which
listings of a group it may store at once ahead of the others without changing any answer.

None of these functions begins, commits or rolls back: they run inside the caller's
transaction, which is what makes a call atomic (call them inside one). The one exception,
`rebuild_history_committed`, is `rebuild_history` in a transaction of its own, for callers that
have none. The SQL lives in `sql/history_*.sql`.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
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
    """What applying a snapshot found out about it before touching history."""

    snapshot_id: str
    workspace_id: str
    taken_at_us: int
    row_count: int
    fingerprint: int
    others_in_step: bool
    last_applied_us: int | None
    times_applied: int
    applied_workspace_id: str | None
    applied_unchanged: bool

    @property
    def action(self) -> Literal["none", "step", "rebuild"]:
        """Nothing when history already reflects exactly this snapshot; one incremental step
        when history reflects exactly the workspace's other snapshots, all older; otherwise
        a rebuild of the workspace (and of the one the snapshot was applied to before)."""
        if not self.others_in_step:
            return "rebuild"
        if self.times_applied == 1 and self.applied_unchanged:
            return "none"
        newest = self.last_applied_us is None or self.taken_at_us > self.last_applied_us
        return "step" if self.times_applied == 0 and newest else "rebuild"

    @property
    def workspaces(self) -> list[str]:
        """The workspaces whose history applying this snapshot may change."""
        return sorted({self.workspace_id, self.applied_workspace_id} - {None})


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
    return apply_snapshots(con, [snapshot_id])[0]


def apply_snapshots(
    con: duckdb.DuckDBPyConnection, snapshot_ids: Sequence[str]
) -> list[dict[str, int]]:
    """`apply_snapshot` for each of these stored snapshots in turn: the same history and the
    same counts (one per snapshot_id given), from a few statements for the lot.

    Every snapshot that touches no workspace an earlier one in the list touches (its own, and
    the one it was applied to before) is planned with the others at once, and those that take
    the incremental step take it together. The rest (a second snapshot of a workspace, say)
    are then applied one at a time, in order: what ran before them touched their workspaces
    exactly as applying the list in turn would have.
    """
    if isinstance(snapshot_ids, str):
        raise TypeError("snapshot_ids takes a sequence of snapshot ids, not one string")
    if not snapshot_ids:
        return []
    ensure_history_state(con)
    plans = _plans(con, list(dict.fromkeys(snapshot_ids)))
    first = _first_to_touch([_touches(plans[s].workspaces) for s in snapshot_ids])
    order = list(zip(snapshot_ids, first, strict=True))
    counts = _apply_together(con, [plans[snapshot_id] for snapshot_id, ok in order if ok])
    return [
        counts[snapshot_id] if ok else apply_snapshot(con, snapshot_id) for snapshot_id, ok in order
    ]


def storable_together(
    con: duckdb.DuckDBPyConnection, snapshots: Sequence[tuple[str, str]]
) -> list[bool]:
    """For snapshots about to be stored and applied in this order, as (snapshot_id,
    workspace_id): which ones may be stored first, all at once, and applied with
    `apply_snapshots`, leaving the others to be stored and applied one at a time after them.

    True for a snapshot that shares no snapshot_id and touches no workspace with an earlier
    one, counting the workspaces its snapshot_id is stored or applied under now (storing it
    replaces those rows). Done that way, every snapshot is applied to exactly the state that
    storing and applying the list in turn would give it.
    """
    ensure_history_state(con)
    step = _statements("history_step.sql")
    ids = list(dict.fromkeys(snapshot_id for snapshot_id, _ in snapshots))
    now: dict[str, set[str]] = {snapshot_id: set() for snapshot_id in ids}
    for snapshot_id, workspace_id in con.execute(
        step["touched_workspaces"], {"snapshot_ids": ids}
    ).fetchall():
        now[snapshot_id].add(workspace_id)
    return _first_to_touch(
        [
            _touches({workspace_id, *now[snapshot_id]}) | {("snapshot", snapshot_id)}
            for snapshot_id, workspace_id in snapshots
        ]
    )


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


def rebuild_history_committed(
    con: duckdb.DuckDBPyConnection, workspace_ids: Sequence[str] | None = None
) -> dict[str, int]:
    """`rebuild_history` in its own transaction: committed whole, or rolled back on any error."""
    con.execute("BEGIN TRANSACTION")
    try:
        counts = rebuild_history(con, workspace_ids)
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")  # a commit that fails ends the transaction itself
    return counts


def _touches(workspace_ids: Iterable[str]) -> set[tuple[str, str]]:
    """What changing these workspaces' history (or stored snapshots) touches."""
    return {("workspace", workspace_id) for workspace_id in workspace_ids}


def _first_to_touch(touched: Sequence[set[tuple[str, str]]]) -> list[bool]:
    """In order: whether each item touches nothing that an earlier item touches."""
    seen: set[tuple[str, str]] = set()
    first = []
    for keys in touched:
        first.append(seen.isdisjoint(keys))
        seen |= keys
    return first


def _plans(con: duckdb.DuckDBPyConnection, snapshot_ids: list[str]) -> dict[str, _Plan]:
    """Each snapshot's plan against history as it is now, from one query for them all."""
    step = _statements("history_step.sql")
    targets = {
        snapshot_id: (workspace_id, taken_at_us)
        for snapshot_id, workspace_id, taken_at_us in con.execute(
            step["targets"], {"snapshot_ids": snapshot_ids}
        ).fetchall()
    }
    for snapshot_id in snapshot_ids:
        if snapshot_id not in targets:
            raise UnknownSnapshotError(
                f"snapshot {snapshot_id!r} is not in synthflow.snapshots; store the snapshot "
                "(its synthflow.snapshots row and its number rows) before applying it"
            )
    where = {
        "snapshot_ids": snapshot_ids,
        "workspace_ids": [targets[snapshot_id][0] for snapshot_id in snapshot_ids],
        "taken_at_us": [targets[snapshot_id][1] for snapshot_id in snapshot_ids],
    }
    return {
        snapshot_id: _Plan(snapshot_id, *targets[snapshot_id], *found)
        for snapshot_id, *found in con.execute(step["plan"], where).fetchall()
    }


def _apply_together(
    con: duckdb.DuckDBPyConnection, plans: list[_Plan]
) -> dict[str, dict[str, int]]:
    """Apply snapshots that touch no workspace in common; each one's counts by snapshot_id."""
    for plan in plans:
        if plan.action == "rebuild":
            _rebuild(con, plan.workspaces)
    _step(con, [plan for plan in plans if plan.action == "step"])
    step = _statements("history_step.sql")
    found: dict[str, list[tuple[str, int]]] = {plan.snapshot_id: [] for plan in plans}
    if plans:
        for snapshot_id, change_type, count in con.execute(
            step["snapshot_counts"], _targets(plans)
        ).fetchall():
            found[snapshot_id].append((change_type, count))
    return {snapshot_id: _counts(rows) for snapshot_id, rows in found.items()}


def _targets(plans: list[_Plan]) -> dict[str, list]:
    """The parallel lists by which the statements of history_step.sql take snapshots."""
    return {
        "snapshot_ids": [plan.snapshot_id for plan in plans],
        "workspace_ids": [plan.workspace_id for plan in plans],
        "taken_at_us": [plan.taken_at_us for plan in plans],
    }


def _step(con: duckdb.DuckDBPyConnection, plans: list[_Plan]) -> None:
    """Apply snapshots of distinct workspaces, each newer than every applied one of its
    workspace, touching only those workspaces' open versions."""
    if not plans:
        return
    step = _statements("history_step.sql")
    targets = _targets(plans)
    previous = [plan.last_applied_us for plan in plans]
    con.execute(step["transitions"], {**targets, "previous_taken_at_us": previous})
    con.execute(_sql("history_changes.sql"))
    con.execute(step["close_versions"], {"workspace_ids": targets["workspace_ids"]})
    con.execute(step["open_versions"])
    marked = {
        **targets,
        "row_counts": [plan.row_count for plan in plans],
        "fingerprints": [plan.fingerprint for plan in plans],
    }
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
