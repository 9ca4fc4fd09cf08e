"""The analytics views on small hand cases with obvious answers.

current_numbers: each workspace's open versions with country and since. workspace_utilization:
one row per stored snapshot, assigned_share in [0, 1] and 0 for an empty listing.
number_moves: a `removed` in one workspace and an `added` in another whose observation windows
(previous_taken_at, changed_at] overlap; the window reported is that overlap.
"""

from __future__ import annotations

from collections.abc import Iterator

import duckdb
import pytest

from pipelines.warehouse.connection import ensure_schema
from tests.history_cases import at, load_snapshot, new_warehouse


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = new_warehouse()
    yield connection
    connection.close()


def rows(con: duckdb.DuckDBPyConnection, query: str) -> list[tuple]:
    return con.execute(query).fetchall()


def test_views_are_created_idempotently(con) -> None:
    views = "SELECT view_name FROM duckdb_views() WHERE schema_name = 'synthflow' ORDER BY 1"
    before = rows(con, views)
    ensure_schema(con)
    ensure_schema(con)

    assert rows(con, views) == before
    assert {"current_numbers", "workspace_utilization", "number_moves"} <= {v for (v,) in before}


def test_current_numbers_lists_open_versions_with_country_and_since(con) -> None:
    countries = {"+14155550100": "US", "+442071838750": "GB"}
    listing = {"+14155550100": (True, None), "+15550000": (True, None)}
    load_snapshot(con, "s1", "w", at(0), listing, countries)
    listing = {"+14155550100": (False, "PN1"), "+442071838750": (True, None)}
    load_snapshot(con, "s2", "w", at(10), listing, countries)

    assert rows(con, "FROM synthflow.current_numbers ORDER BY number") == [
        ("w", "+14155550100", "PN1", False, "US", at(10)),
        ("w", "+442071838750", None, True, "GB", at(10)),
    ]


def test_current_numbers_since_is_when_the_current_state_began(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    load_snapshot(con, "s2", "w", at(10), {"+1": (True, None)})

    assert rows(con, "SELECT number, since FROM synthflow.current_numbers") == [("+1", at(0))]


def test_current_numbers_is_empty_after_an_empty_listing(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    load_snapshot(con, "s2", "w", at(10), {})

    assert rows(con, "FROM synthflow.current_numbers") == []


def test_utilization_counts_each_snapshot(con) -> None:
    load_snapshot(
        con, "s1", "w", at(0), {"+1": (True, None), "+2": (False, "a"), "+3": (False, None)}
    )
    load_snapshot(con, "s2", "w", at(10), {"+1": (True, None)})

    assert rows(con, "FROM synthflow.workspace_utilization ORDER BY taken_at") == [
        ("w", "s1", at(0), 3, 1, 2, pytest.approx(2 / 3)),
        ("w", "s2", at(10), 1, 1, 0, 0.0),
    ]


def test_utilization_of_an_empty_listing_is_zero_not_null(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {})

    assert rows(con, "FROM synthflow.workspace_utilization") == [("w", "s1", at(0), 0, 0, 0, 0.0)]


MOVE_COLUMNS = "number, from_workspace_id, to_workspace_id, window_start, window_end"


def test_number_removed_here_and_added_there_in_overlapping_windows_is_a_move(con) -> None:
    load_snapshot(con, "a1", "wa", at(0), {"+1": (True, None)})
    load_snapshot(con, "b1", "wb", at(5), {"+2": (True, None)})
    load_snapshot(con, "a2", "wa", at(10), {})  # removed in (0, 10]
    load_snapshot(con, "b2", "wb", at(15), {"+1": (True, None), "+2": (True, None)})  # (5, 15]

    assert rows(con, "FROM synthflow.number_moves") == [
        ("+1", "wa", "wb", at(10), at(15), "a2", "b2", at(5), at(10))
    ]


def test_windows_that_do_not_overlap_are_not_a_move(con) -> None:
    load_snapshot(con, "a1", "wa", at(0), {"+1": (True, None)})
    load_snapshot(con, "a2", "wa", at(10), {})  # removed in (0, 10]
    load_snapshot(con, "b1", "wb", at(10), {"+2": (True, None)})
    load_snapshot(con, "b2", "wb", at(20), {"+1": (True, None), "+2": (True, None)})  # (10, 20]

    assert rows(con, f"SELECT {MOVE_COLUMNS} FROM synthflow.number_moves") == []


def test_first_snapshot_addition_reaches_back_to_minus_infinity(con) -> None:
    load_snapshot(con, "a1", "wa", at(0), {"+1": (True, None)})
    load_snapshot(con, "a2", "wa", at(10), {})  # removed in (0, 10]
    load_snapshot(con, "b1", "wb", at(5), {"+1": (True, None)})  # added in (-infinity, 5]

    assert rows(con, f"SELECT {MOVE_COLUMNS} FROM synthflow.number_moves") == [
        ("+1", "wa", "wb", at(0), at(5))
    ]


def test_leaving_and_returning_to_the_same_workspace_is_not_a_move(con) -> None:
    load_snapshot(con, "a1", "wa", at(0), {"+1": (True, None)})
    load_snapshot(con, "a2", "wa", at(10), {})
    load_snapshot(con, "a3", "wa", at(20), {"+1": (True, None)})

    assert rows(con, "FROM synthflow.number_moves") == []


def test_every_table_view_and_column_of_the_schema_is_described(con) -> None:
    """One COMMENT per object and column, bookkeeping included: an analyst reads them with
    `SELECT * FROM duckdb_columns()`."""
    undescribed = rows(
        con,
        "SELECT table_name FROM duckdb_tables() WHERE schema_name = 'synthflow' "
        "AND coalesce(comment, '') = '' UNION ALL "
        "SELECT view_name FROM duckdb_views() WHERE schema_name = 'synthflow' "
        "AND coalesce(comment, '') = '' UNION ALL "
        "SELECT table_name || '.' || column_name FROM duckdb_columns() "
        "WHERE schema_name = 'synthflow' AND coalesce(comment, '') = ''",
    )
    assert undescribed == []
