"""Taking snapshots: read every selected workspace's listing concurrently and store each whole.

Plain Python, no Dagster: the snapshot asset calls `take_snapshots` and reports what it returns.
Listings are stored as they arrive, so memory holds a few listings, not the whole run; those
that arrive while a store runs are stored together next (`_GroupWriter`). One workspace's
failure is recorded as its outcome and never stops the others.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import duckdb
import pyarrow as pa
from pydantic import SecretStr

try:
    import uvloop
except ImportError:  # not built for Windows: asyncio's own loop
    uvloop = None

from pipelines.config import ConfigError, FetchSettings, Workspace
from pipelines.synthflow.client import Endpoint, SynthflowClient
from pipelines.synthflow.errors import SynthflowError
from pipelines.synthflow.listing import Listing, read_listing
from pipelines.warehouse.normalize import listing_columns, listing_table
from pipelines.warehouse.store import SnapshotRow, store_snapshots

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
    error: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.error is None


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


def _store_group(
    con: duckdb.DuckDBPyConnection, group: list[tuple[SnapshotRow, Listing]]
) -> list[dict[str, int]]:
    rows = [
        (
            snapshot,
            listing_table(
                listing.numbers,
                snapshot_id=snapshot.snapshot_id,
                workspace_id=snapshot.workspace_id,
                taken_at=snapshot.taken_at,
            ),
        )
        for snapshot, listing in group
    ]
    return store_snapshots(con, rows)


THREAD_SWITCH_INTERVAL_S = 0.0005
RUN_CHECKPOINT_THRESHOLD = "1GB"  # write-ahead log a run may grow before a checkpoint
# Numbers stored in one transaction at most: groups of 50,000 to 150,000 stored 10,000-number
# listings ~25% faster than one at a time; larger groups were no faster.
GROUP_ROWS = 200_000


@dataclass
class _Waiting:
    snapshot: SnapshotRow
    listing: Listing
    changes: asyncio.Future[dict[str, int]]


class _GroupWriter:
    """Stores listings on one connection, every listing that is waiting in one transaction.

    Whoever takes the writer stores all the listings that arrived while the previous store
    ran, so a run of many workspaces commits a few times, not once per workspace, and each
    snapshot is still stored whole or not at all.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._turn = asyncio.Lock()
        self._waiting: list[_Waiting] = []

    async def store(self, snapshot: SnapshotRow, listing: Listing) -> dict[str, int]:
        mine = _Waiting(snapshot, listing, asyncio.get_running_loop().create_future())
        self._waiting.append(mine)
        async with self._turn:
            if not mine.changes.done():  # no earlier group took it: store what is waiting
                group = self._take_group()
                try:
                    stored = await asyncio.to_thread(
                        _store_group, self._con, [(w.snapshot, w.listing) for w in group]
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


async def _snapshot_workspaces(
    workspaces: list[Workspace],
    api_key: Callable[[Workspace], str],
    fetch: FetchSettings,
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    progress: Progress,
) -> list[WorkspaceOutcome]:
    writer = _GroupWriter(con)

    async def one(client: SynthflowClient, workspace: Workspace) -> WorkspaceOutcome:
        outcome = WorkspaceOutcome(workspace)
        try:
            endpoint = Endpoint(workspace.id, workspace.base_url, SecretStr(api_key(workspace)))
            listing = await read_listing(client, endpoint, normalize=listing_columns)
            outcome.requests, outcome.retries = listing.counts.requests, listing.counts.retries
            outcome.seconds, outcome.available = listing.seconds, listing.available
            snapshot = _snapshot_row(listing, run_id)
            outcome.changes = await writer.store(snapshot, listing)
            outcome.snapshot = snapshot
        except (SynthflowError, ConfigError) as error:
            outcome.error = str(error)
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
    ):
        return _run_interruptibly(
            _snapshot_workspaces(workspaces, api_key, fetch, con, run_id, progress or Progress())
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


def _run_interruptibly(main: Coroutine[Any, Any, T]) -> T:
    """`_run(main)`, where Ctrl-C cancels `main` cleanly and then raises KeyboardInterrupt.

    The SIGINT handler in place (Dagster's raises an exception wherever Python happens to be)
    could fire inside asyncio's socket code, which takes any exception there for a broken
    connection: the interruption would be retried away. asyncio's runner handles SIGINT itself
    when it finds Python's default handler, so that one is put in place for the run.
    """
    if threading.current_thread() is not threading.main_thread():
        return _run(main)  # signals only ever reach the main thread
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        return _run(main)
    finally:
        signal.signal(signal.SIGINT, previous)
