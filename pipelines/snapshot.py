"""Taking snapshots: read every selected workspace concurrently, store each listing whole.

One way: the Synthflow client reads a verified listing, normalization makes it a frame, one
writer stores it as it arrives (memory holds a few listings, not the run). One workspace's
failure is its outcome and never stops the others. Plain Python: the asset calls
`take_snapshots` and reports what it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

import duckdb
import pandas as pd
from pydantic import SecretStr

try:
    import uvloop
except ImportError:  # not built for Windows: asyncio's own loop
    uvloop = None

from pipelines.config import ConfigError, FetchSettings, Workspace
from pipelines.interrupts import cancel_on_signals
from pipelines.normalize import listing_frame, not_e164
from pipelines.synthflow.client import Endpoint, SynthflowClient
from pipelines.synthflow.errors import MalformedResponseError, SynthflowError
from pipelines.synthflow.listing import Listing, read_listing
from pipelines.warehouse.checkpoints import checkpoints_deferred
from pipelines.warehouse.store import (
    SnapshotRow,
    newest_snapshots,
    record_workspaces,
    store_snapshots,
    stored_countries,
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
    """The listing was read at a time not after the workspace's newest stored snapshot: it
    would be history behind the current state, or at the same time."""

    def __init__(self, workspace_id: str, taken_at: datetime, newest: datetime) -> None:
        super().__init__(
            f"workspace {workspace_id}: this machine's clock read {taken_at:%Y-%m-%d %H:%M:%S} "
            f"UTC when the listing was read, not after the newest stored snapshot of this "
            f"workspace (taken {newest:%Y-%m-%d %H:%M:%S} UTC); nothing was stored, since it "
            "would be filed as an older state. Check the clock (NTP) and run again"
        )


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


def _frame(con: duckdb.DuckDBPyConnection, listing: Listing, previous: str | None) -> pd.DataFrame:
    """The listing's numbers normalized, the countries of numbers in `previous` reused.

    Two spellings of one number (`+1 212 555 0123` and `+12125550123`) pass the listing's
    check but are one number in E.164: refused here, so the workspace fails alone instead of
    breaking the primary key of a store it shares with others."""
    frame = listing_frame(listing.numbers, stored_countries(con, previous) if previous else {})
    if repeated := int(frame["number"].duplicated().sum()):
        raise MalformedResponseError(
            listing.workspace_id,
            f"{repeated} number(s) of the listing are written twice, in two spellings of one "
            "E.164 number; nothing was stored",
            fix="Ask Synthflow to list each number once; the next run reads again",
        )
    return frame


# Numbers stored in one transaction at most: groups of 50,000 to 150,000 stored 10,000-number
# listings ~25% faster than one at a time; larger groups were no faster.
GROUP_ROWS = 200_000


@dataclass
class _Waiting:
    snapshot: SnapshotRow
    rows: pd.DataFrame
    changes: asyncio.Future[dict[str, int]]


class _Writer:
    """Stores listings on one connection, in one thread, every listing waiting in one
    transaction (up to GROUP_ROWS numbers).

    Whoever takes the turn stores all the listings that arrived while the previous store ran,
    so a run of many workspaces commits a few times, not once per workspace, and each snapshot
    is still stored whole or not at all. A store, once given to the thread, runs to its end
    even if its caller is cancelled (Ctrl-C): it commits or rolls back whole.
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, thread: ThreadPoolExecutor) -> None:
        self._con = con
        self._thread = thread
        self._turn = asyncio.Lock()
        self._waiting: list[_Waiting] = []

    async def store(self, snapshot: SnapshotRow, rows: pd.DataFrame) -> dict[str, int]:
        mine = _Waiting(snapshot, rows, asyncio.get_running_loop().create_future())
        self._waiting.append(mine)
        async with self._turn:
            if not mine.changes.done():  # no earlier group took it: store what is waiting
                group = self._take_group()
                stored = asyncio.wrap_future(
                    self._thread.submit(
                        store_snapshots, self._con, [(w.snapshot, w.rows) for w in group]
                    )
                )
                try:
                    changes = await asyncio.shield(stored)
                except Exception as error:
                    for waiting in group:
                        waiting.changes.set_exception(error)
                else:
                    for waiting, counts in zip(group, changes, strict=True):
                        waiting.changes.set_result(counts)
                finally:  # interrupted: nobody is left waiting for a store that will not come
                    for waiting in group:
                        if not waiting.changes.done():
                            waiting.changes.cancel()
        return await mine.changes

    def _take_group(self) -> list[_Waiting]:
        """The waiting listings in arrival order, up to GROUP_ROWS numbers (at least one)."""
        rows = 0
        for taken, waiting in enumerate(self._waiting):
            rows += len(waiting.rows)
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
    store_thread: ThreadPoolExecutor,
    run_id: str,
    progress: Progress,
) -> list[WorkspaceOutcome]:
    writer = _Writer(con, store_thread)
    newest = newest_snapshots(con, {ws.id: snapshot_id_for(ws.id, run_id) for ws in workspaces})

    async def one(client: SynthflowClient, workspace: Workspace) -> WorkspaceOutcome:
        outcome = WorkspaceOutcome(workspace)
        try:
            endpoint = Endpoint(
                workspace.id,
                workspace.base_url,
                SecretStr(api_key(workspace)),
                workspace.api_key_env,
            )
            listing = await read_listing(client, endpoint)
            outcome.requests, outcome.retries = listing.counts.requests, listing.counts.retries
            outcome.seconds, outcome.available = listing.seconds, listing.available
            previous, newest_taken_at = newest.get(workspace.id, (None, None))
            if newest_taken_at and listing.taken_at <= newest_taken_at:
                raise ClockBehindError(workspace.id, listing.taken_at, newest_taken_at)
            rows = await asyncio.to_thread(_frame, con, listing, previous)
            outcome.not_e164 = not_e164(rows)
            snapshot = _snapshot_row(listing, run_id)
            outcome.changes = await writer.store(snapshot, rows)
            outcome.snapshot = snapshot
        except (SynthflowError, ConfigError, ClockBehindError) as error:
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
        checkpoints_deferred(con),
        ThreadPoolExecutor(max_workers=1, thread_name_prefix="store") as store_thread,
    ):
        record_workspaces(con, workspaces)
        return _run(
            cancel_on_signals(
                _snapshot_workspaces(
                    workspaces, api_key, fetch, con, store_thread, run_id, progress or Progress()
                )
            )
        )


def _run(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run(main)` on uvloop where it is installed: every request costs the event loop
    CPU, and with many answers arriving together that CPU is what a request waits for
    (uvloop: ~20 % less of it a request)."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if uvloop else None) as runner:
        return runner.run(main)
