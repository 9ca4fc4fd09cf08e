"""The analyst's SQL objects (pipelines/warehouse/sql/analytics.sql) on small known histories.

numbers_as_of(ts): the versions whose half-open [valid_from, valid_to) holds ts. daily_inventory:
per workspace and UTC day from its first snapshot to today, the newest snapshot on or before the
day, carried forward. assignment_spans: consecutive assigned versions form one span, ended by
`released` or `removed`, open spans with a NULL end measured to now. daily_churn and
weekly_churn: changes counted per day (zeros included) and per ISO week. sid_changes: each
`sid_changed` with the SID before and after. Every object and column is described in SQL.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from pipelines.warehouse.connection import connect, ensure_schema
from pipelines.warehouse.schema import read_sql
from tests.history_cases import T0, at, load_snapshot, new_warehouse

NEW_VIEWS = ["assignment_spans", "daily_churn", "daily_inventory", "sid_changes", "weekly_churn"]


@pytest.fixture
def con() -> Iterator[duckdb.DuckDBPyConnection]:
    connection = new_warehouse()
    yield connection
    connection.close()


def rows(con: duckdb.DuckDBPyConnection, query: str, params: list | None = None) -> list[tuple]:
    return con.execute(query, params or []).fetchall()


def on(n: int, hour: int = 12) -> datetime:
    """A taken_at on the UTC day `n` days after T0 (2025-01-01, a Wednesday), at `hour`."""
    return T0 + timedelta(days=n, hours=hour)


def day(n: int) -> date:
    """The UTC day `n` days after T0."""
    return (T0 + timedelta(days=n)).date()


AS_OF = (
    "SELECT workspace_id, number, sid, is_available FROM synthflow.numbers_as_of(?) ORDER BY 1, 2"
)


def test_as_of_exactly_at_a_snapshot_shows_that_snapshot_and_just_before_the_previous(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    load_snapshot(con, "s2", "w", at(10), {"+1": (False, "PN1")})

    assert rows(con, AS_OF, [at(10)]) == [("w", "+1", "PN1", False)]
    assert rows(con, AS_OF, [at(10) - timedelta(microseconds=1)]) == [("w", "+1", None, True)]


def test_as_of_before_the_first_snapshot_is_empty(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})

    assert rows(con, AS_OF, [at(-1)]) == []


def test_as_of_omits_a_number_while_it_was_gone_and_shows_it_once_re_added(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None), "+2": (True, None)})
    load_snapshot(con, "s2", "w", at(10), {"+2": (True, None)})
    load_snapshot(con, "s3", "w", at(20), {"+1": (False, "PN1"), "+2": (True, None)})

    assert rows(con, AS_OF, [at(15)]) == [("w", "+2", None, True)]
    assert rows(con, AS_OF, [at(20)]) == [("w", "+1", "PN1", False), ("w", "+2", None, True)]


def test_as_of_after_a_workspace_was_emptied_shows_none_of_its_numbers(con) -> None:
    load_snapshot(con, "a1", "wa", at(0), {"+1": (True, None)})
    load_snapshot(con, "b1", "wb", at(0), {"+2": (True, None)})
    load_snapshot(con, "a2", "wa", at(10), {})

    assert rows(con, AS_OF, [at(10)]) == [("wb", "+2", None, True)]


def test_as_of_gives_country_and_the_version_interval_and_takes_a_string(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+14155550100": (True, None)}, {"+14155550100": "US"})
    load_snapshot(con, "s2", "w", at(10), {"+14155550100": (False, None)})

    assert rows(con, "FROM synthflow.numbers_as_of('2025-01-01 00:05:00+00')") == [
        ("w", "+14155550100", None, True, "US", at(0), at(10))
    ]


INVENTORY = "FROM synthflow.daily_inventory WHERE day <= ? ORDER BY workspace_id, day"


def test_a_day_without_a_snapshot_shows_the_newest_snapshot_before_it(con) -> None:
    load_snapshot(con, "s1", "w", on(0), {"+1": (True, None), "+2": (False, "a")})
    load_snapshot(con, "s2", "w", on(2), {"+1": (False, "b"), "+2": (False, "a")})

    assert rows(con, INVENTORY, [day(3)]) == [
        (day(0), "w", 2, 1, 1),
        (day(1), "w", 2, 1, 1),
        (day(2), "w", 2, 0, 2),
        (day(3), "w", 2, 0, 2),
    ]


def test_a_day_shows_its_newest_snapshot(con) -> None:
    load_snapshot(con, "s1", "w", on(0, hour=1), {"+1": (True, None)})
    load_snapshot(con, "s2", "w", on(0, hour=23), {"+1": (True, None), "+2": (True, None)})

    assert rows(con, INVENTORY, [day(0)]) == [(day(0), "w", 2, 2, 0)]


def test_each_workspace_starts_on_its_first_snapshot_day_and_an_emptied_one_counts_zero(
    con,
) -> None:
    load_snapshot(con, "a1", "wa", on(0), {"+1": (True, None)})
    load_snapshot(con, "b1", "wb", on(1), {"+2": (False, "x")})
    load_snapshot(con, "a2", "wa", on(1), {})

    assert rows(con, INVENTORY, [day(2)]) == [
        (day(0), "wa", 1, 1, 0),
        (day(1), "wa", 0, 0, 0),
        (day(2), "wa", 0, 0, 0),
        (day(1), "wb", 1, 0, 1),
        (day(2), "wb", 1, 0, 1),
    ]


def test_days_run_without_gaps_to_today(con) -> None:
    load_snapshot(con, "s1", "w", on(0), {"+1": (True, None)})

    before = datetime.now(UTC).date()
    first, last, days = rows(
        con, "SELECT min(day), max(day), count(DISTINCT day) FROM synthflow.daily_inventory"
    )[0]
    after = datetime.now(UTC).date()

    assert first == day(0)
    assert last in {before, after}
    assert days == (last - first).days + 1


SPANS = "FROM synthflow.assignment_spans ORDER BY workspace_id, number, started_at"


def test_a_released_number_has_one_closed_span_across_sid_changes(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    load_snapshot(con, "s2", "w", at(10), {"+1": (False, "a")})
    load_snapshot(con, "s3", "w", at(20), {"+1": (False, "b")})
    load_snapshot(con, "s4", "w", at(30), {"+1": (True, "b")})

    assert rows(con, SPANS) == [
        ("w", "+1", at(10), at(30), False, "released", timedelta(minutes=20))
    ]


def test_a_number_removed_while_assigned_ends_its_span_and_a_re_add_starts_another(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (False, "a"), "+2": (True, None)})
    load_snapshot(con, "s2", "w", at(10), {"+2": (True, None)})
    load_snapshot(con, "s3", "w", at(20), {"+1": (False, "a"), "+2": (True, None)})
    load_snapshot(con, "s4", "w", at(30), {"+1": (True, "a"), "+2": (True, None)})

    assert rows(con, SPANS) == [
        ("w", "+1", at(0), at(10), False, "removed", timedelta(minutes=10)),
        ("w", "+1", at(20), at(30), False, "released", timedelta(minutes=10)),
    ]


def test_an_emptied_workspace_ends_its_spans_as_removed(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (False, "a")})
    load_snapshot(con, "s2", "w", at(10), {})

    assert rows(con, SPANS) == [("w", "+1", at(0), at(10), False, "removed", timedelta(minutes=10))]


def test_released_and_assigned_again_is_two_spans(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (False, "a")})
    load_snapshot(con, "s2", "w", at(10), {"+1": (True, "a")})
    load_snapshot(con, "s3", "w", at(20), {"+1": (False, "a")})
    load_snapshot(con, "s4", "w", at(30), {"+1": (True, "a")})

    assert rows(con, SPANS) == [
        ("w", "+1", at(0), at(10), False, "released", timedelta(minutes=10)),
        ("w", "+1", at(20), at(30), False, "released", timedelta(minutes=10)),
    ]


def test_an_open_span_has_no_end_and_is_measured_to_now(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None)})
    load_snapshot(con, "s2", "w", at(10), {"+1": (False, "a")})
    load_snapshot(con, "s3", "w", at(20), {"+1": (False, "b")})

    before = datetime.now(UTC)
    [(started_at, ended_at, is_open, ended_by, duration)] = rows(
        con,
        "SELECT started_at, ended_at, is_open, ended_by, duration FROM synthflow.assignment_spans",
    )
    after = datetime.now(UTC)

    assert (started_at, ended_at, is_open, ended_by) == (at(10), None, True, None)
    assert before - at(10) <= duration <= after - at(10)


CHURN = "FROM synthflow.daily_churn WHERE day <= ? ORDER BY day"


def test_daily_churn_counts_each_day_and_shows_quiet_days_as_zeros(con) -> None:
    load_snapshot(con, "s1", "w", on(0), {"+1": (True, None), "+2": (False, "a")})
    load_snapshot(con, "s2", "w", on(0, hour=18), {"+1": (False, None), "+2": (False, "a")})
    load_snapshot(con, "s3", "w", on(2), {"+1": (True, None), "+3": (True, None)})

    assert rows(con, CHURN, [day(3)]) == [
        (day(0), "w", 2, 0, 1, 0),
        (day(1), "w", 0, 0, 0, 0),
        (day(2), "w", 1, 1, 0, 1),
        (day(3), "w", 0, 0, 0, 0),
    ]


def test_weekly_churn_sums_monday_to_sunday(con) -> None:
    load_snapshot(con, "s1", "w", on(0), {"+1": (True, None)})  # Wednesday 2025-01-01
    load_snapshot(con, "s2", "w", on(4), {"+1": (False, None)})  # Sunday
    load_snapshot(con, "s3", "w", on(5), {"+2": (True, None)})  # Monday 2025-01-06
    load_snapshot(con, "s4", "w", on(13), {"+2": (False, None)})  # Tuesday 2025-01-14

    assert rows(con, "FROM synthflow.weekly_churn WHERE week <= ? ORDER BY week", [day(13)]) == [
        (date(2024, 12, 30), "w", 1, 0, 1, 0),
        (date(2025, 1, 6), "w", 1, 1, 0, 0),
        (date(2025, 1, 13), "w", 0, 0, 1, 0),
    ]


def test_sid_changes_show_the_sid_before_and_after(con) -> None:
    load_snapshot(con, "s1", "w", at(0), {"+1": (True, None), "+2": (True, "a"), "+3": (True, "c")})
    load_snapshot(
        con, "s2", "w", at(10), {"+1": (True, "n"), "+2": (False, None), "+3": (True, "c")}
    )
    load_snapshot(con, "s3", "w", at(20), {"+1": (True, "m"), "+3": (True, "c")})
    load_snapshot(con, "s4", "w", at(30), {"+1": (True, "m"), "+2": (True, "z")})

    assert rows(con, "FROM synthflow.sid_changes ORDER BY changed_at, number") == [
        ("w", "+1", at(10), at(0), "s2", None, "n", True),
        ("w", "+2", at(10), at(0), "s2", "a", None, False),
        ("w", "+1", at(20), at(10), "s3", "n", "m", True),
    ]


def test_every_new_object_and_column_is_described_also_after_a_second_connect(con) -> None:
    ensure_schema(con)

    views = rows(
        con,
        "SELECT view_name, comment IS NOT NULL FROM duckdb_views() "
        "WHERE schema_name = 'synthflow' AND list_contains(?, view_name) ORDER BY 1",
        [NEW_VIEWS],
    )
    undescribed_columns = rows(
        con,
        "SELECT table_name, column_name FROM duckdb_columns() "
        "WHERE schema_name = 'synthflow' AND list_contains(?, table_name) AND comment IS NULL",
        [NEW_VIEWS],
    )
    macro = rows(
        con,
        "SELECT comment IS NOT NULL FROM duckdb_functions() "
        "WHERE schema_name = 'synthflow' AND function_name = 'numbers_as_of'",
    )

    assert views == [(name, True) for name in NEW_VIEWS]
    assert undescribed_columns == []
    assert macro == [(True,)]


def test_a_database_made_before_these_objects_gets_them_on_the_next_writer_connect(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.duckdb"
    with duckdb.connect(str(path)) as old:
        for name in ("schema.sql", "history_state.sql", "views.sql"):
            old.execute(read_sql(name))

    with connect(path) as con:
        assert rows(con, "FROM synthflow.numbers_as_of(now())") == []
        assert rows(con, "FROM synthflow.sid_changes") == []
