"""Taking snapshots: read every selected workspace's listing concurrently and store each whole.

Plain Python, no Dagster: the snapshot asset calls `take_snapshots` and reports what it returns.
Listings are stored as they arrive, so memory holds a few listings, not the whole run; those
that arrive while a store runs are stored together next (`_GroupWriter`), and a large listing
read while nothing else is stored has its front stored while the rest is read (`_Stage`). One
workspace's failure is recorded as its outcome and never stops the others.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
from pydantic import SecretStr

try:
    import uvloop
except ImportError:  # not built for Windows: asyncio's own loop
    uvloop = None

from pipelines.config import ConfigError, FetchSettings, Workspace
from pipelines.interrupts import cancel_on_signals
from pipelines.synthflow.client import Endpoint, SynthflowClient
from pipelines.synthflow.errors import SynthflowError
from pipelines.synthflow.listing import LeadingRows, Listing, read_listing
from pipelines.warehouse.normalize import listing_columns, listing_table, not_e164
from pipelines.warehouse.store import (
    SnapshotRow,
    StagedSnapshot,
    newest_taken_at,
    store_snapshots,
)

T = TypeVar("T")


@dataclass
class WorkspaceOutcome:
    """What happened to one workspace in one run."""

    workspace: Workspace
    snapshot: SnapshotRow | None = None
    available: int = 0
    requests: int = 0
    retries: int = 0
    seconds: float = 0.0
    changes: dict[str, int] = field(default_factory=dict)
    not_e164: list[str] = field(default_factory=list)  # stored as the API gave them
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


class ClockBehindError(Exception):
    """The listing was read at a time not after the workspace's newest stored snapshot."""

    def __init__(self, workspace_id: str, taken_at: datetime, newest: datetime) -> None:
        super().__init__(
            f"workspace {workspace_id}: this machine's clock read {taken_at:%Y-%m-%d %H:%M:%S} "
            f"UTC when the listing was read, not after the newest stored snapshot of this "
            f"workspace (taken {newest:%Y-%m-%d %H:%M:%S} UTC); nothing was stored, since it "
            "would be filed as an older state. Check the clock (NTP) and run again"
        )


def check_clock(listing: Listing, newest: datetime | None) -> None:
    """Refuse a listing that would be history behind the current state, or at the same time."""
    if newest is not None and listing.taken_at <= newest:
        raise ClockBehindError(listing.workspace_id, listing.taken_at, newest)


class Progress:
    """Hooks for whoever watches a run (the CLI draws bars); the default watches nothing."""

    def started(self, workspace_ids: list[str]) -> None:
        """The run is about to read these workspaces."""

    def finished(self, outcome: WorkspaceOutcome) -> None:
        """One workspace is stored or failed."""


def snapshot_id_for(workspace_id: str, run_id: str) -> str:
    """One id per workspace per run: a retried or re-executed step replaces, never adds."""
    return f"{workspace_id}/{run_id}"


def _snapshot_row(listing: Listing, run_id: str) -> SnapshotRow:
    return SnapshotRow(
        snapshot_id=snapshot_id_for(listing.workspace_id, run_id),
        workspace_id=listing.workspace_id,
        taken_at=listing.taken_at,
        total_records=listing.total_records,
        row_count=listing.numbers.num_rows,
        page_count=listing.page_count,
        run_id=run_id,
    )


def _rows(snapshot: SnapshotRow, numbers: pa.Table) -> pa.Table:
    """The number_snapshots rows of these numbers of the snapshot."""
    return listing_table(
        numbers,
        snapshot_id=snapshot.snapshot_id,
        workspace_id=snapshot.workspace_id,
        taken_at=snapshot.taken_at,
    )


def _store_group(
    con: duckdb.DuckDBPyConnection, group: list[tuple[SnapshotRow, Listing]]
) -> list[dict[str, int]]:
    return store_snapshots(
        con, [(snapshot, _rows(snapshot, listing.numbers)) for snapshot, listing in group]
    )


THREAD_SWITCH_INTERVAL_S = 0.0005
RUN_CHECKPOINT_THRESHOLD = "1GB"  # write-ahead log a run may grow before a checkpoint
# Numbers stored in one transaction at most: groups of 50,000 to 150,000 stored 10,000-number
# listings ~25% faster than one at a time; larger groups were no faster.
GROUP_ROWS = 200_000


# A listing of this many numbers has its front stored while the rest is read, when no other
# listing needs the writer: a 50,000-number listing was stored ~0.1 s sooner after its last page
# (benchmarks/staged_commit.py times what is left after it). Larger listings are not: the staged
# rows sit in DuckDB beside the listing's own columns until the commit, and a 200,000-number
# workspace read at full speed peaked 21 MB higher (473 vs 452 MB) and finished no sooner, its
# reads leaving no idle CPU for the inserts to use.
STAGE_MIN_ROWS = 20_000
STAGE_MAX_ROWS = 120_000


@dataclass
class _Waiting:
    snapshot: SnapshotRow
    listing: Listing
    changes: asyncio.Future[dict[str, int]]


class _GroupWriter:
    """Stores listings on one connection, every listing that is waiting in one transaction.

    Whoever takes the writer stores all the listings that arrived while the previous store
    ran, so a run of many workspaces commits a few times, not once per workspace, and each
    snapshot is still stored whole or not at all. Every statement runs on `thread`, one
    thread, in the order given; once given, it runs to its end even if its caller is
    cancelled, so whatever follows finds the connection as that statement left it.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, thread: ThreadPoolExecutor) -> None:
        self.con = con
        self._thread = thread
        self._turn = asyncio.Lock()
        self._waiting: list[_Waiting] = []
        self._staging: _Stage | None = None  # whose staged rows hold the writer

    def run(self, work: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """Give `work` to the thread now; the future tells its result."""
        return asyncio.shield(asyncio.wrap_future(self._thread.submit(work, *args)))

    async def store(self, snapshot: SnapshotRow, listing: Listing) -> dict[str, int]:
        mine = _Waiting(snapshot, listing, asyncio.get_running_loop().create_future())
        self._waiting.append(mine)
        if self._staging is not None:  # the writer is wanted: staged rows give way
            await self._staging.withdraw()
        async with self._turn:
            if not mine.changes.done():  # no earlier group took it: store what is waiting
                group = self._take_group()
                try:
                    stored = await self.run(
                        _store_group, self.con, [(w.snapshot, w.listing) for w in group]
                    )
                except Exception as error:
                    for waiting in group:
                        waiting.changes.set_exception(error)
                else:
                    for waiting, changes in zip(group, stored, strict=True):
                        waiting.changes.set_result(changes)
                finally:  # interrupted: nobody is left waiting for a store that will not come
                    for waiting in group:
                        if not waiting.changes.done():
                            waiting.changes.cancel()
        return await mine.changes

    def _take_group(self) -> list[_Waiting]:
        """The waiting listings in arrival order, up to GROUP_ROWS numbers (at least one)."""
        rows = 0
        for taken, waiting in enumerate(self._waiting):
            rows += waiting.listing.numbers.num_rows
            if rows > GROUP_ROWS and taken:
                break
        else:
            taken = len(self._waiting)
        group, self._waiting = self._waiting[:taken], self._waiting[taken:]
        return group

    async def take_for(self, stage: _Stage) -> bool:
        """Give the writer to `stage` if no listing is stored or waiting to be."""
        if self._turn.locked() or self._waiting or self._staging is not None:
            return False
        await self._turn.acquire()  # at once, unless a store just ended and wakes its waiters
        if self._waiting or self._staging is not None:
            self._turn.release()
            return False
        self._staging = stage
        return True

    def give_back(self, stage: _Stage) -> None:
        """`stage` is done with the writer; statements it gave the thread run first."""
        if self._staging is stage:
            self._staging = None
        self._turn.release()


class _Stage:
    """Stores the front of one large listing while the rest is read, then the rest.

    The rows go into a transaction on the writer's connection (`StagedSnapshot`) while no
    other listing needs it; `store` finishes that transaction with the rest of the listing,
    its snapshot row and its history. The listing never depends on it: the rows of an
    abandoned read, a failed insert (a number repeated across pages breaks the primary key;
    the read's own checks then say so) and any other listing wanting the writer roll the
    staged rows back, and the listing is then stored as any other.
    """

    def __init__(self, writer: _GroupWriter, snapshot_id: str, workspace_id: str) -> None:
        self._writer = writer
        self._snapshot_id = snapshot_id
        self._workspace_id = workspace_id
        self._staged: StagedSnapshot | None = None
        self._attempt = 0  # the read whose rows are staged

    async def leading(self, rows: LeadingRows) -> None:
        """`read_listing`'s `leading`: stage these rows if the writer is free or ours."""
        if self._staged is not None and rows.attempt != self._attempt:
            await self.withdraw()  # an abandoned read's rows
        if self._staged is None:
            if rows.start or not STAGE_MIN_ROWS <= rows.total_records <= STAGE_MAX_ROWS:
                return
            if not await self._writer.take_for(self):
                return
            self._staged = StagedSnapshot(self._writer.con, self._snapshot_id)
            self._attempt = rows.attempt
        staged = self._staged
        table = listing_table(
            rows.numbers,
            snapshot_id=self._snapshot_id,
            workspace_id=self._workspace_id,
            taken_at=rows.taken_at,
        )
        try:
            await self._writer.run(staged.add, table)
        except duckdb.Error:
            if self._staged is staged:
                await self.withdraw()

    async def store(self, snapshot: SnapshotRow, listing: Listing) -> dict[str, int]:
        """Store the listing: the rest of it after its staged front, or all of it."""
        staged = self._staged
        if staged is None or listing.attempts != self._attempt:
            await self.withdraw()
            return await self._writer.store(snapshot, listing)
        self._staged = None  # stored from here on, never withdrawn
        try:
            (changes,) = await self._writer.run(
                _store_rest, self._writer.con, snapshot, listing, staged
            )
        finally:
            self._writer.give_back(self)
        return changes

    async def withdraw(self) -> None:
        """Roll the staged rows back, if any, and give the writer back."""
        staged, self._staged = self._staged, None
        if staged is None:
            return
        rolled_back = self._writer.run(staged.discard)
        self._writer.give_back(self)
        await rolled_back


def _store_rest(
    con: duckdb.DuckDBPyConnection, snapshot: SnapshotRow, listing: Listing, staged: StagedSnapshot
) -> list[dict[str, int]]:
    rest = _rows(snapshot, listing.numbers.slice(staged.rows))
    return store_snapshots(con, [(snapshot, rest)], staged=staged)


async def _snapshot_workspaces(
    workspaces: list[Workspace],
    api_key: Callable[[Workspace], str],
    fetch: FetchSettings,
    con: duckdb.DuckDBPyConnection,
    store_thread: ThreadPoolExecutor,
    run_id: str,
    progress: Progress,
) -> list[WorkspaceOutcome]:
    writer = _GroupWriter(con, store_thread)
    newest = newest_taken_at(con, {ws.id: snapshot_id_for(ws.id, run_id) for ws in workspaces})

    async def one(client: SynthflowClient, workspace: Workspace) -> WorkspaceOutcome:
        outcome = WorkspaceOutcome(workspace)
        stage = _Stage(writer, snapshot_id_for(workspace.id, run_id), workspace.id)
        try:
            endpoint = Endpoint(workspace.id, workspace.base_url, SecretStr(api_key(workspace)))
            listing = await read_listing(
                client, endpoint, normalize=listing_columns, leading=stage.leading
            )
            outcome.requests, outcome.retries = listing.counts.requests, listing.counts.retries
            outcome.seconds, outcome.available = listing.seconds, listing.available
            check_clock(listing, newest.get(workspace.id))
            outcome.not_e164 = not_e164(listing.numbers)
            snapshot = _snapshot_row(listing, run_id)
            outcome.changes = await stage.store(snapshot, listing)
            outcome.snapshot = snapshot
        except (SynthflowError, ConfigError, ClockBehindError) as error:
            outcome.error = str(error)
        finally:  # a read that failed or was interrupted leaves nothing staged
            await stage.withdraw()
        progress.finished(outcome)
        return outcome

    progress.started([workspace.id for workspace in workspaces])
    async with SynthflowClient(fetch) as client:
        return list(await asyncio.gather(*(one(client, ws) for ws in workspaces)))


def take_snapshots(
    workspaces: list[Workspace],
    *,
    api_key: Callable[[Workspace], str],
    fetch: FetchSettings,
    connect: Callable[[], AbstractContextManager[duckdb.DuckDBPyConnection]],
    run_id: str,
    progress: Progress | None = None,
) -> list[WorkspaceOutcome]:
    """Snapshot each workspace once; the outcomes are in the order of `workspaces`."""
    with (
        connect() as con,
        _checkpoints_deferred(con),
        _quick_thread_switches(),
        _arrow_memory_from_malloc(),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="store") as store_thread,
    ):
        return _run(
            cancel_on_signals(
                _snapshot_workspaces(
                    workspaces, api_key, fetch, con, store_thread, run_id, progress or Progress()
                )
            )
        )


@contextmanager
def _checkpoints_deferred(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """No checkpoint during the run's stores, not one every 16 MB of write-ahead log.

    Each checkpoint writes the primary-key index of number_snapshots whole, so a run that
    stores a million numbers spent over half its storing time in checkpoints that grew with
    the table. Every store is still committed to the log; a crash loses nothing committed.
    The one checkpoint after the run is left to the caller (the snapshot step runs it beside
    its reporting), or to DuckDB, which checkpoints when the database closes.
    """
    (threshold,) = con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    con.execute(f"SET checkpoint_threshold = '{RUN_CHECKPOINT_THRESHOLD}'")
    try:
        yield
    finally:
        con.execute(f"SET checkpoint_threshold = '{threshold}'")


@contextmanager
def _arrow_memory_from_malloc() -> Iterator[None]:
    """Let Arrow allocate through the C library during the run, not its bundled allocator.

    Reads are normalized and stored in threads; the bundled allocator (mimalloc) kept what
    those threads freed, ~40 MB more peak memory for a 200,000-number workspace at the same
    speed. Buffers are freed to the pool that allocated them, so switching back is safe.
    """
    pool = pa.default_memory_pool()
    pa.set_memory_pool(pa.system_memory_pool())
    try:
        yield
    finally:
        pa.set_memory_pool(pool)


@contextmanager
def _quick_thread_switches() -> Iterator[None]:
    """Hand Python's interpreter lock over more often while the run reads and stores.

    Stores run in a thread beside the event loop, which keeps the lock busy parsing pages.
    Each DuckDB statement needs the lock to start and to return, and by default waits up to
    5 ms for it: with fifteen statements a listing, a million numbers stored ~3 s later.
    """
    interval = sys.getswitchinterval()
    sys.setswitchinterval(THREAD_SWITCH_INTERVAL_S)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)


def _run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop where it is installed: every request costs the event loop
    CPU, and with many answers arriving together that CPU is what a request waits for
    (uvloop: ~20 % less of it a request)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        return runner.run(main)
