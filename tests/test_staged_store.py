"""A large listing's front is stored while the rest is read (pipelines/snapshot.py, `_Stage`).

Contract: staging changes when rows are written, never what is stored. A snapshot stored with
its front staged equals the workspace exactly, in the API's order, with the history a snapshot
stored after its read would give; rows staged from a read that was abandoned, that failed, that
another listing interrupted by needing the writer, or that repeated a number never reach the
file; and the connection is left free for whatever follows.

The end-to-end tests run `take_snapshots` against the simulator with the thresholds lowered
(LEADING_CHUNK_ROWS, STAGE_MIN_ROWS) so that a few hundred numbers stage; the rest drive the
writer directly on a real DuckDB file, to put a competing listing or an interruption at an
exact point of a staged read.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pytest

from pipelines import snapshot
from pipelines.config import FetchSettings, Workspace
from pipelines.snapshot import WorkspaceOutcome, take_snapshots
from pipelines.synthflow import listing as listing_module
from pipelines.synthflow.client import RequestCounts
from pipelines.synthflow.listing import LeadingRows, Listing
from pipelines.synthflow.simulator import Simulator, demo_simulator
from pipelines.warehouse.normalize import listing_columns
from pipelines.warehouse.store import StagedSnapshot, connect
from tests.conftest import TEST_KEY

NUMBERS = 300
CHUNK = 50
FETCH = FetchSettings(page_size=10, concurrency=4, max_backoff_s=0.01, max_retries=3)


class StagingSpy:
    """Counts what `StagedSnapshot` really did: rows added and stages rolled back."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.added: list[int] = []
        self.discarded = 0
        add, discard = StagedSnapshot.add, StagedSnapshot.discard

        def counted_add(staged: StagedSnapshot, rows: pa.Table) -> None:
            add(staged, rows)
            self.added.append(rows.num_rows)

        def counted_discard(staged: StagedSnapshot) -> None:
            discard(staged)
            self.discarded += 1

        monkeypatch.setattr(StagedSnapshot, "add", counted_add)
        monkeypatch.setattr(StagedSnapshot, "discard", counted_discard)


@pytest.fixture
def staging(monkeypatch: pytest.MonkeyPatch) -> StagingSpy:
    monkeypatch.setattr(listing_module, "LEADING_CHUNK_ROWS", CHUNK)
    monkeypatch.setattr(snapshot, "STAGE_MIN_ROWS", 2 * CHUNK)
    return StagingSpy(monkeypatch)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with demo_simulator(seed=5, workspaces=1, numbers_per_workspace=NUMBERS) as simulator:
        yield simulator


def take(sim: Simulator, db: Path, run_id: str) -> WorkspaceOutcome:
    workspaces = [
        Workspace(id=wid, name=None, base_url=sim.base_url, api_key_env="UNUSED")
        for wid in sim.workspace_ids()
    ]
    (outcome,) = take_snapshots(
        workspaces,
        api_key=lambda _: TEST_KEY,
        fetch=FETCH,
        connect=lambda: connect(db),
        run_id=run_id,
    )
    return outcome


def stored_in_order(db: Path, snapshot_id: str) -> list[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute(
            "SELECT number, sid, is_available FROM synthflow.number_snapshots "
            "WHERE snapshot_id = ? ORDER BY rowid",
            [snapshot_id],
        ).fetchall()


def served(sim: Simulator) -> list[tuple]:
    return [(n.number, n.sid, n.is_available) for n in sim.numbers(sim.workspace_ids()[0])]


def change_counts(db: Path) -> dict[str, int]:
    with duckdb.connect(str(db), read_only=True) as con:
        rows = con.execute(
            "SELECT change_type, count(*) FROM synthflow.number_changes GROUP BY ALL"
        ).fetchall()
    return dict(rows)


# --- through take_snapshots -----------------------------------------------------------------


def test_a_listing_stored_while_read_equals_the_workspace_in_api_order(sim, staging, tmp_path):
    db = tmp_path / "db.duckdb"
    outcome = take(sim, db, "run-1")
    assert outcome.succeeded, outcome.error
    assert staging.added and sum(staging.added) < NUMBERS  # the front staged, not the end
    assert all(rows >= CHUNK for rows in staging.added)
    assert staging.discarded == 0
    assert stored_in_order(db, outcome.snapshot.snapshot_id) == served(sim)
    assert (outcome.snapshot.row_count, outcome.snapshot.page_count) == (NUMBERS, NUMBERS // 10)
    assert outcome.changes["added"] == NUMBERS
    assert change_counts(db) == {"added": NUMBERS}


def test_listings_outside_the_staged_sizes_are_stored_after_their_read(
    sim, staging, tmp_path, monkeypatch
):
    monkeypatch.setattr(snapshot, "STAGE_MAX_ROWS", NUMBERS - 1)
    outcome = take(sim, tmp_path / "db.duckdb", "run-1")
    assert outcome.succeeded, outcome.error
    assert staging.added == []
    assert stored_in_order(tmp_path / "db.duckdb", outcome.snapshot.snapshot_id) == served(sim)


def test_history_after_staged_stores_is_what_the_changes_were(sim, staging, tmp_path):
    db = tmp_path / "db.duckdb"
    workspace_id = sim.workspace_ids()[0]
    take(sim, db, "run-1")
    front, late = served(sim)[0][0], served(sim)[-1][0]
    sim.remove_number(workspace_id, front)  # in the staged front of run 1, gone in run 2
    sim.set_available(workspace_id, late, not served(sim)[-1][2])
    sim.add_number(workspace_id, sim.new_number())
    outcome = take(sim, db, "run-2")
    assert outcome.succeeded, outcome.error
    assert len(staging.added) >= 2 and staging.discarded == 0
    assert stored_in_order(db, outcome.snapshot.snapshot_id) == served(sim)
    assert {kind: n for kind, n in outcome.changes.items() if n} == {
        "added": 1,
        "removed": 1,
        "released" if served(sim)[-2][2] else "assigned": 1,
    }
    with duckdb.connect(str(db), read_only=True) as con:
        current = con.execute(
            "SELECT number, sid, is_available FROM synthflow.number_history WHERE is_current"
        ).fetchall()
    assert sorted(current) == sorted(served(sim))


def test_a_run_stored_again_with_its_front_staged_replaces_its_rows(sim, staging, tmp_path):
    db = tmp_path / "db.duckdb"
    take(sim, db, "run-1")
    outcome = take(sim, db, "run-1")  # a re-executed run: the same snapshot_id
    assert outcome.succeeded, outcome.error
    assert len(staging.added) >= 2 and staging.discarded == 0  # staged over the old rows
    assert stored_in_order(db, outcome.snapshot.snapshot_id) == served(sim)
    with duckdb.connect(str(db), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM synthflow.snapshots").fetchone() == (1,)


def test_a_number_repeated_in_the_staged_front_rolls_it_back_and_is_read_again(
    sim, staging, tmp_path
):
    db = tmp_path / "db.duckdb"
    sim.duplicate_across_pages(sim.workspace_ids()[0], count=1)  # repeats a number of page 1
    outcome = take(sim, db, "run-1")
    assert outcome.succeeded, outcome.error
    assert staging.discarded >= 1  # the primary key refused the repeat while staging
    assert stored_in_order(db, outcome.snapshot.snapshot_id) == served(sim)
    assert change_counts(db) == {"added": NUMBERS}


# --- the writer, driven step by step --------------------------------------------------------

TAKEN_AT = datetime(2026, 11, 30, 12, tzinfo=UTC)


def numbers(count: int, first: int = 0) -> pa.Table:
    return listing_columns(
        pa.table(
            {
                "number": [f"+1415555{n:04d}" for n in range(first, first + count)],
                "sid": [f"PN{n:032d}" for n in range(first, first + count)],
                "is_available": [n % 3 == 0 for n in range(first, first + count)],
            }
        )
    )


def listing_of(workspace_id: str, table: pa.Table, attempt: int = 1) -> Listing:
    return Listing(
        workspace_id=workspace_id,
        taken_at=TAKEN_AT + timedelta(seconds=attempt),
        total_records=table.num_rows,
        numbers=table,
        page_count=table.num_rows // 10,
        counts=RequestCounts(),
        attempts=attempt,
    )


def front(listing: Listing, rows: int) -> LeadingRows:
    return LeadingRows(
        listing.attempts, listing.taken_at, listing.total_records, 0, listing.numbers[:rows]
    )


class Writer:
    """A `_GroupWriter` on a fresh DuckDB file and a stage for each workspace named."""

    def __init__(self, con: duckdb.DuckDBPyConnection, thread: ThreadPoolExecutor) -> None:
        self.con = con
        self.writer = snapshot._GroupWriter(con, thread)

    def stage(self, workspace_id: str) -> snapshot._Stage:
        return snapshot._Stage(self.writer, f"{workspace_id}/run", workspace_id)

    def row(self, listing: Listing) -> snapshot.SnapshotRow:
        return snapshot._snapshot_row(listing, "run")

    def stored(self, workspace_id: str) -> list[tuple]:
        return self.con.execute(
            "SELECT number, sid, is_available FROM synthflow.number_snapshots "
            "WHERE workspace_id = ? ORDER BY rowid",
            [workspace_id],
        ).fetchall()


def drive(steps: Coroutine[Any, Any, None]) -> None:
    """Run the steps; a writer that never comes free fails the test instead of hanging it."""
    asyncio.run(asyncio.wait_for(steps, timeout=30))


def rows_of(table: pa.Table) -> list[tuple]:
    return list(
        zip(*(table[c].to_pylist() for c in ("number", "sid", "is_available")), strict=True)
    )


@pytest.fixture
def writer(tmp_path: Path, staging: StagingSpy) -> Iterator[Writer]:
    with (
        connect(tmp_path / "db.duckdb") as con,
        ThreadPoolExecutor(max_workers=1) as thread,
    ):
        yield Writer(con, thread)


def test_a_listing_that_needs_the_writer_rolls_the_staged_front_back(writer, staging):
    big, small = listing_of("big", numbers(300)), listing_of("small", numbers(20, first=1000))

    async def go() -> None:
        stage = writer.stage("big")
        await stage.leading(front(big, 100))
        assert staging.added == [100]
        await writer.writer.store(writer.row(small), small)  # wants the writer: big gives way
        assert staging.discarded == 1
        await stage.leading(LeadingRows(1, big.taken_at, 300, 100, big.numbers[100:200]))
        assert staging.added == [100]  # a front with a hole is not staged
        await stage.store(writer.row(big), big)

    drive(go())
    assert writer.stored("small") == rows_of(small.numbers)
    assert writer.stored("big") == rows_of(big.numbers)


def test_the_rows_of_an_abandoned_read_are_rolled_back(writer, staging):
    first, second = listing_of("ws", numbers(300), 1), listing_of("ws", numbers(290, 5), 2)

    async def go() -> None:
        stage = writer.stage("ws")
        await stage.leading(front(first, 100))
        await stage.leading(front(second, 100))  # the first read did not add up
        assert staging.discarded == 1 and staging.added == [100, 100]
        await stage.store(writer.row(second), second)

    drive(go())
    assert writer.stored("ws") == rows_of(second.numbers)


def test_a_read_that_fails_after_its_front_is_staged_leaves_nothing(writer, staging):
    big, other = listing_of("big", numbers(300)), listing_of("other", numbers(20, first=1000))

    async def go() -> None:
        stage = writer.stage("big")
        await stage.leading(front(big, 100))
        await stage.withdraw()  # what the workspace's step does when its read fails
        await writer.writer.store(writer.row(other), other)

    drive(go())
    assert staging.added == [100] and staging.discarded == 1
    assert writer.stored("big") == []
    assert writer.stored("other") == rows_of(other.numbers)


def test_an_interruption_while_staging_leaves_nothing_and_a_free_connection(writer, staging):
    big, other = listing_of("big", numbers(300)), listing_of("other", numbers(20, first=1000))

    async def go() -> None:
        stage = writer.stage("big")
        await stage.leading(front(big, 100))
        staging_more = asyncio.create_task(
            stage.leading(LeadingRows(1, big.taken_at, 300, 100, big.numbers[100:200]))
        )
        await asyncio.sleep(0)  # the insert is handed to the writer's thread
        staging_more.cancel()
        with pytest.raises(asyncio.CancelledError):
            await staging_more
        await stage.withdraw()
        await writer.writer.store(writer.row(other), other)

    drive(go())
    assert staging.discarded == 1
    assert writer.stored("big") == []
    assert writer.stored("other") == rows_of(other.numbers)
