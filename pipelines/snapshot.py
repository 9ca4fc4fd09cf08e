"""Taking snapshots: read every selected workspace's listing concurrently and store each whole.

Plain Python, no Dagster: the snapshot asset calls `take_snapshots` and reports what it returns.
Listings are stored as they arrive, so memory holds a few listings, not the whole run; one
workspace's failure is recorded as its outcome and never stops the others.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import duckdb
from pydantic import SecretStr

from pipelines.config import ConfigError, FetchSettings, Workspace
from pipelines.synthflow.client import Endpoint, SynthflowClient
from pipelines.synthflow.errors import SynthflowError
from pipelines.synthflow.listing import Listing, read_listing
from pipelines.warehouse.normalize import snapshot_frame
from pipelines.warehouse.store import SnapshotRow, store_snapshot


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


def _store(
    con: duckdb.DuckDBPyConnection, listing: Listing, run_id: str
) -> tuple[SnapshotRow, dict[str, int]]:
    snapshot = SnapshotRow(
        snapshot_id=snapshot_id_for(listing.workspace_id, run_id),
        workspace_id=listing.workspace_id,
        taken_at=listing.taken_at,
        total_records=listing.total_records,
        row_count=len(listing.records),
        page_count=listing.page_count,
        run_id=run_id,
    )
    frame = snapshot_frame(
        listing.records,
        snapshot_id=snapshot.snapshot_id,
        workspace_id=snapshot.workspace_id,
        taken_at=snapshot.taken_at,
    )
    return snapshot, store_snapshot(con, snapshot, frame)


async def _snapshot_workspaces(
    workspaces: list[Workspace],
    api_key: Callable[[Workspace], str],
    fetch: FetchSettings,
    con: duckdb.DuckDBPyConnection,
    run_id: str,
    progress: Progress,
) -> list[WorkspaceOutcome]:
    writer = asyncio.Lock()  # one DuckDB connection: stores take turns, fetches overlap

    async def one(client: SynthflowClient, workspace: Workspace) -> WorkspaceOutcome:
        outcome = WorkspaceOutcome(workspace)
        try:
            endpoint = Endpoint(workspace.id, workspace.base_url, SecretStr(api_key(workspace)))
            listing = await read_listing(client, endpoint)
            outcome.requests, outcome.retries = listing.counts.requests, listing.counts.retries
            outcome.seconds, outcome.available = listing.seconds, listing.available
            async with writer:
                outcome.snapshot, outcome.changes = await asyncio.to_thread(
                    _store, con, listing, run_id
                )
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
    with connect() as con:
        return asyncio.run(
            _snapshot_workspaces(workspaces, api_key, fetch, con, run_id, progress or Progress())
        )
