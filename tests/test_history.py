"""number_history and number_changes, one hand-written case per rule of the contract.

A version (SCD2 row) starts when a number first appears, reappears, or changes availability or
sid (NULL <-> value included) and ends at the taken_at of the snapshot that showed it ended.
Each attribute transition is one number_changes row whose previous_taken_at is the
workspace's snapshot before. Applying snapshots one at a time in any order, or again, ends
exactly where rebuild_history ends. Storing a group of listings of distinct workspaces at
once (store_snapshots, as a run does) or applying several such snapshots at once
(apply_snapshots) gives each snapshot the counts, and history the rows, that storing or
applying them one at a time gives; those that can step take one incremental step together. A
group whose snapshots share a workspace or an id is refused, storing nothing.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pandas as pd
import pytest

from pipelines.warehouse import history
from pipelines.warehouse.history import (
    UnknownSnapshotError,
    apply_snapshot,
    apply_snapshots,
    rebuild_history,
)
from pipelines.warehouse.store import store_snapshots
from tests.history_cases import (
    SnapshotCase,
    at,
    change_rows,
    counts,
    history_rows,
    listing_rows,
    load_snapshot,
    new_warehouse,
    one_at_a_time,
    store_group,
    store_snapshot,
)


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = new_warehouse()
    yield connection
    connection.close()


def test_first_snapshot_adds_every_number(con) -> None:
    listing = {"+1": (True, None), "+2": (False, "sid-2")}

    assert load_snapshot(con, "s1", "w", at(0), listing) == counts(added=2)
    assert history_rows(con) == [
        ("w", "+1", True, None, at(0), None, True),
        ("w", "+2", False, "sid-2", at(0), None, True),
    ]
    assert change_rows(con) == [
        ("w", "+1", at(0), None, "s1", "added", None, True),
        ("w", "+2", at(0), None, "s1", "added", None, False),
    ]


def test_assignment_and_release_are_recorded_with_previous_snapshot_time(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None), "+2": (False, None)})

    assert load_snapshot(con, "s2", "w", at(5), {"+1": (False, None), "+2": (True, None)}) == (
        counts(assigned=1, released=1)
    )
    assert change_rows(con)[1::2] == [
        ("w", "+1", at(5), at(0), "s2", "assigned", True, False),
        ("w", "+2", at(5), at(0), "s2", "released", False, True),
    ]
    assert history_rows(con) == [
        ("w", "+1", False, None, at(5), None, True),
        ("w", "+1", True, None, at(0), at(5), False),
        ("w", "+2", False, None, at(0), at(5), False),
        ("w", "+2", True, None, at(5), None, True),
    ]


@pytest.mark.parametrize(("before", "after"), [(None, "sid-a"), ("sid-a", None), ("a", "b")])
def test_sid_change_including_null_opens_a_version(con, before, after) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, before)})

    assert load_snapshot(con, "s2", "w", at(1), {"+1": (True, after)}) == counts(sid_changed=1)
    assert change_rows(con)[-1] == ("w", "+1", at(1), at(0), "s2", "sid_changed", True, True)
    assert sorted(history_rows(con), key=lambda row: row[4]) == [
        ("w", "+1", True, before, at(0), at(1), False),
        ("w", "+1", True, after, at(1), None, True),
    ]


def test_sid_and_availability_changing_together_give_two_rows(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})

    assert load_snapshot(con, "s2", "w", at(1), {"+1": (False, "sid-1")}) == counts(
        assigned=1, sid_changed=1
    )
    assert change_rows(con)[1:] == [
        ("w", "+1", at(1), at(0), "s2", "assigned", True, False),
        ("w", "+1", at(1), at(0), "s2", "sid_changed", False, False),
    ]
    assert history_rows(con) == [
        ("w", "+1", False, "sid-1", at(1), None, True),
        ("w", "+1", True, None, at(0), at(1), False),
    ]


def test_missing_number_closes_its_version_and_is_removed(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (False, "sid-1"), "+2": (True, None)})

    assert load_snapshot(con, "s2", "w", at(3), {"+2": (True, None)}) == counts(removed=1)
    assert change_rows(con)[1] == ("w", "+1", at(3), at(0), "s2", "removed", False, None)
    assert history_rows(con) == [
        ("w", "+1", False, "sid-1", at(0), at(3), False),
        ("w", "+2", True, None, at(0), None, True),
    ]


def test_reappearing_number_opens_a_new_version_and_is_added(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    load_snapshot(con, "s2", "w", at(1), {"+2": (True, None)})

    assert load_snapshot(con, "s3", "w", at(2), {"+1": (True, None)}) == counts(added=1, removed=1)
    assert ("w", "+1", at(2), at(1), "s3", "added", None, True) in change_rows(con)
    assert history_rows(con)[:2] == [
        ("w", "+1", True, None, at(0), at(1), False),
        ("w", "+1", True, None, at(2), None, True),
    ]


def test_empty_listing_removes_everything(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None), "+2": (False, "x")})

    assert load_snapshot(con, "s2", "w", at(1), {}) == counts(removed=2)
    assert [(row[5], row[6]) for row in history_rows(con)] == [(at(1), False), (at(1), False)]


def test_reapplying_a_snapshot_changes_nothing(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    first = load_snapshot(con, "s2", "w", at(1), {"+1": (False, None), "+2": (True, None)})
    before = (history_rows(con), change_rows(con))

    assert apply_snapshot(con, "s2") == first
    assert apply_snapshot(con, "s1") == counts(added=1)
    assert (history_rows(con), change_rows(con)) == before


def test_restoring_a_snapshot_with_the_same_rows_changes_nothing(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    before = (history_rows(con), change_rows(con))

    assert load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)}) == counts(added=1)
    assert (history_rows(con), change_rows(con)) == before


def test_out_of_order_application_equals_in_order(con) -> None:
    listings = {
        "s1": (at(0), {"+1": (True, None), "+2": (True, None)}),
        "s2": (at(1), {"+1": (False, "x")}),
        "s3": (at(2), {"+2": (True, None)}),
    }
    for snapshot_id, (taken_at, listing) in listings.items():
        load_snapshot(con, snapshot_id, "w", taken_at, listing)
    in_order = (history_rows(con), change_rows(con))

    shuffled = new_warehouse()
    for snapshot_id in ("s3", "s1", "s2"):
        taken_at, listing = listings[snapshot_id]
        load_snapshot(shuffled, snapshot_id, "w", taken_at, listing)

    assert (history_rows(shuffled), change_rows(shuffled)) == in_order


def test_late_snapshot_returns_its_own_changes(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    load_snapshot(con, "s3", "w", at(2), {"+1": (True, None)})

    assert load_snapshot(con, "s2", "w", at(1), {}) == counts(removed=1)
    assert [row[4:6] for row in change_rows(con)] == [
        ("s1", "added"),
        ("s2", "removed"),
        ("s3", "added"),
    ]


def test_restored_snapshot_with_other_rows_ends_exact(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    load_snapshot(con, "s2", "w", at(1), {"+1": (True, None)})

    restored = load_snapshot(con, "s2", "w", at(1), {"+1": (False, None), "+2": (True, None)})

    assert restored == counts(added=1, assigned=1)
    incremental = (history_rows(con), change_rows(con))
    rebuild_history(con)
    assert (history_rows(con), change_rows(con)) == incremental


def test_snapshot_restored_under_another_workspace_leaves_the_first(con) -> None:
    load_snapshot(con, "s1", "wa", at(0), {"+1": (True, None)})

    load_snapshot(con, "s1", "wb", at(0), {"+1": (True, None)})

    assert {row[0] for row in history_rows(con) + change_rows(con)} == {"wb"}


def test_rebuild_of_one_workspace_leaves_others_untouched(con) -> None:
    load_snapshot(con, "a1", "wa", at(0), {"+1": (True, None)})
    load_snapshot(con, "b1", "wb", at(0), {"+2": (True, None)})
    con.execute("UPDATE synthflow.number_history SET sid = 'tampered'")

    assert rebuild_history(con, ["wa"]) == counts(added=1)
    assert [row[3] for row in history_rows(con)] == [None, "tampered"]


def test_rebuild_recomputes_everything_from_snapshots(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    load_snapshot(con, "s2", "w", at(1), {"+1": (False, None)})
    expected = (history_rows(con), change_rows(con))
    con.execute("DELETE FROM synthflow.number_changes")

    assert rebuild_history(con) == counts(added=1, assigned=1)
    assert (history_rows(con), change_rows(con)) == expected


def test_snapshot_stored_without_apply_is_included_by_the_next_apply(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    store_snapshot(con, "s2", "w", at(1), {})

    load_snapshot(con, "s3", "w", at(2), {"+1": (True, None)})

    assert [row[4:6] for row in change_rows(con)] == [
        ("s1", "added"),
        ("s2", "removed"),
        ("s3", "added"),
    ]


def test_unknown_snapshot_is_refused_with_a_clear_error(con) -> None:
    with pytest.raises(UnknownSnapshotError, match=r"'nope' is not in synthflow\.snapshots"):
        apply_snapshot(con, "nope")


# Storing a group (store_snapshots) and applying several (apply_snapshots): the same history and
# the same counts per snapshot as storing and applying each in turn.


@pytest.fixture
def steps(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The snapshot_ids of each incremental step taken, one list per step."""
    taken: list[list[str]] = []
    step = history._step

    def recording(con, plans):
        if plans:
            taken.append([plan.snapshot_id for plan in plans])
        step(con, plans)

    monkeypatch.setattr(history, "_step", recording)
    return taken


def test_a_group_of_first_and_newer_snapshots_takes_one_step_together(con, steps) -> None:
    store_group(con, [("a1", "wa", at(0), {"+1": (True, None)}), ("b1", "wb", at(0), {})])
    group = [
        ("a2", "wa", at(5), {"+1": (False, "x"), "+2": (True, None)}),
        ("b2", "wb", at(6), {"+1": (True, None)}),
        ("c1", "wc", at(7), {"+3": (True, None)}),
    ]

    assert store_group(con, group) == [
        counts(added=1, assigned=1, sid_changed=1),
        counts(added=1),
        counts(added=1),
    ]
    assert steps == [["a1", "b1"], ["a2", "b2", "c1"]]
    expected = one_at_a_time(
        [("a1", "wa", at(0), {"+1": (True, None)}), ("b1", "wb", at(0), {}), *group]
    )
    assert (history_rows(con), change_rows(con)) == expected[1:]


MIXED_BEFORE: list[SnapshotCase] = [
    ("a1", "wa", at(0), {"+1": (True, None), "+2": (True, None)}),
    ("a3", "wa", at(20), {"+1": (True, None)}),
    ("b1", "wb", at(0), {"+1": (True, None)}),
    ("c1", "wc", at(0), {"+5": (True, None)}),
    ("d1", "wd", at(0), {"+6": (False, "s")}),
    ("g1", "wg", at(0), {"+8": (True, None)}),
    ("g2", "wg", at(10), {}),
]
MIXED_GROUP: list[SnapshotCase] = [
    ("b2", "wb", at(10), {"+1": (False, "x")}),  # a step
    ("a2", "wa", at(10), {}),  # older than a3: a rebuild of wa
    ("e1", "we", at(10), {"+7": (True, None)}),  # a first snapshot: a step
    ("d1", "wd", at(0), {"+6": (False, "s")}),  # stored again, same rows: nothing to do
    ("c1", "wf", at(0), {"+5": (True, None)}),  # stored again under another: wf and wc rebuilt
    ("g3", "wg", at(20), {"+8": (True, None)}),  # a step: "+8" added back since g2
]


def test_a_group_mixing_steps_rebuilds_and_repeats_ends_as_one_at_a_time(con, steps) -> None:
    expected = one_at_a_time([*MIXED_BEFORE, *MIXED_GROUP])
    for snapshot in MIXED_BEFORE:
        load_snapshot(con, *snapshot)
    steps.clear()

    found = store_group(con, MIXED_GROUP)

    assert found == expected[0][len(MIXED_BEFORE) :]
    assert (history_rows(con), change_rows(con)) == expected[1:]
    assert steps == [["b2", "e1", "g3"]]  # the rest rebuilt their workspaces or had nothing to do
    rebuild_history(con)
    assert (history_rows(con), change_rows(con)) == expected[1:]


@pytest.mark.parametrize(
    "group",
    [
        [("b2", "wb", at(10), {}), ("b3", "wb", at(20), {"+2": (True, None)})],
        [("b2", "wb", at(10), {}), ("b2", "wc", at(10), {})],
        # c1 moves to wf, so its history leaves wc: wc is c2's workspace too
        [("c1", "wf", at(0), {"+5": (True, None)}), ("c2", "wc", at(10), {})],
    ],
    ids=["a workspace twice", "an id twice", "a workspace through a moved id"],
)
def test_a_group_sharing_a_workspace_or_an_id_is_refused_and_stores_nothing(
    con, group: list[SnapshotCase]
) -> None:
    load_snapshot(con, "b1", "wb", at(0), {"+1": (True, None)})
    load_snapshot(con, "c1", "wc", at(0), {"+5": (True, None)})
    before = (history_rows(con), change_rows(con))

    with pytest.raises(ValueError, match="distinct workspaces"):
        store_group(con, group)

    assert (history_rows(con), change_rows(con)) == before
    assert con.execute(
        "SELECT snapshot_id, workspace_id FROM synthflow.snapshots ORDER BY 1"
    ).fetchall() == [
        ("b1", "wb"),
        ("c1", "wc"),
    ]


def test_apply_snapshots_gives_what_apply_snapshot_gives_in_turn(con) -> None:
    one_by_one = new_warehouse()
    for warehouse in (con, one_by_one):
        load_snapshot(warehouse, "a1", "wa", at(0), {"+1": (True, None)})
        for snapshot in [
            ("a0", "wa", at(-5), {}),
            ("b1", "wb", at(5), {"+2": (True, None)}),
            ("c1", "wc", at(1), {}),
        ]:
            store_snapshot(warehouse, *snapshot)
    order = ["b1", "c1", "a0"]

    in_turn = [apply_snapshot(one_by_one, snapshot_id) for snapshot_id in order]

    assert apply_snapshots(con, order) == in_turn
    assert (history_rows(con), change_rows(con)) == (
        history_rows(one_by_one),
        change_rows(one_by_one),
    )
    one_by_one.close()
    with pytest.raises(ValueError, match="distinct workspaces"):
        apply_snapshots(con, ["a0", "a1"])


def test_a_failing_group_stores_nothing(con) -> None:
    store_group(con, [("a1", "wa", at(0), {"+1": (True, None)})])
    before = (history_rows(con), change_rows(con))
    duplicate = listing_rows("b1", "wb", at(1), {"+2": (True, None)})
    doubled = (duplicate[0], pd.concat([duplicate[1], duplicate[1]]))

    with pytest.raises(duckdb.ConstraintException):
        store_snapshots(con, [listing_rows("a2", "wa", at(1), {}), doubled])

    assert (history_rows(con), change_rows(con)) == before
    assert con.execute("SELECT count(*) FROM synthflow.snapshots").fetchone() == (1,)
