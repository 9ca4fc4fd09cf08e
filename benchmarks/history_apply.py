"""Does applying a snapshot cost the same however long the history already is?

Builds file-backed DuckDB databases in a temporary directory for one workspace of 20,000
numbers and stores 100 snapshots of it, each with 1% churn (removals, additions, assignments
and releases, sid changes). Each snapshot is loaded the way the loader does it (one
transaction, the listing inserted in bulk from a pandas DataFrame, a checkpointed file) and
only `apply_snapshot` is timed. Snapshot 2 (on a history of one snapshot, in a second
database) and snapshot 100 (on a history of 99) are timed in alternation, applied and rolled
back several times, so that both see the same load on a shared machine; a warm-up run comes
first and the whole is repeated, and medians are reported.

Target: applying snapshot 100 costs at most 1.2 x applying snapshot 2, i.e. the incremental
step reads only the new listing, the one before it and the open versions, not the history behind.

Run: .venv/bin/python benchmarks/history_apply.py [--repetitions N]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from pipelines.warehouse.connection import ensure_schema
from pipelines.warehouse.history import apply_snapshot, ensure_history_state

NUMBERS = 20_000
SNAPSHOTS = 100
CHURN = 0.01
BOUND = 1.2
WORKSPACE_ID = "bench-workspace"
T0 = datetime(2025, 1, 1, tzinfo=UTC)


def first_listing(rng: np.random.Generator) -> pd.DataFrame:
    """The workspace's numbers at the start: number, sid, is_available, country."""
    numbers = [f"+1555{i:07d}" for i in range(NUMBERS)]
    available = rng.random(NUMBERS) < 0.5
    sids = [None if free else f"PN{i:07d}" for i, free in enumerate(available)]
    return pd.DataFrame(
        {"number": numbers, "sid": sids, "is_available": available, "country": "US"}
    )


def churned(listing: pd.DataFrame, rng: np.random.Generator, serial: int) -> pd.DataFrame:
    """The next listing: 1% of the numbers change, a quarter each way of changing."""
    events = int(len(listing) * CHURN)
    quarter = events // 4
    picked = rng.choice(len(listing), size=3 * quarter, replace=False)
    removed, flipped, resid = np.split(picked, 3)
    listing = listing.copy()
    listing.loc[listing.index[flipped], "is_available"] = ~listing["is_available"].iloc[flipped]
    listing.loc[listing.index[resid], "sid"] = [f"PN{serial:03d}{i:05d}" for i in resid]
    added = pd.DataFrame(
        {
            "number": [f"+1666{serial:03d}{i:04d}" for i in range(quarter)],
            "sid": None,
            "is_available": True,
            "country": "US",
        }
    )
    kept = listing.drop(listing.index[removed])
    return pd.concat([kept, added], ignore_index=True)


def store(con: duckdb.DuckDBPyConnection, index: int, listing: pd.DataFrame) -> str:
    """Write one snapshot as the loader does: its snapshots row, then the listing in bulk."""
    snapshot_id = f"bench-{index:03d}"
    taken_at = T0 + timedelta(hours=index)
    frame = listing.assign(snapshot_id=snapshot_id, workspace_id=WORKSPACE_ID, taken_at=taken_at)
    con.execute(
        "INSERT INTO synthflow.snapshots VALUES (?, ?, ?, ?, ?, 1, 'bench')",
        [snapshot_id, WORKSPACE_ID, taken_at, len(frame), len(frame)],
    )
    con.register("listing_frame", frame)
    con.execute(
        "INSERT INTO synthflow.number_snapshots "
        "SELECT snapshot_id, workspace_id, taken_at, number, sid, is_available, country "
        "FROM listing_frame"
    )
    con.unregister("listing_frame")
    return snapshot_id


def load(con: duckdb.DuckDBPyConnection, index: int, listing: pd.DataFrame, keep: bool) -> float:
    """Store and apply one snapshot in one transaction, as the loader does; commit it (keep)
    or roll it back (a trial). Returns the seconds apply_snapshot took."""
    con.execute("BEGIN TRANSACTION")
    snapshot_id = store(con, index, listing)
    gc.collect()
    gc.disable()
    started = time.perf_counter()
    apply_snapshot(con, snapshot_id)
    elapsed = time.perf_counter() - started
    gc.enable()
    con.execute("COMMIT" if keep else "ROLLBACK")
    # Each scheduled run is its own process and DuckDB checkpoints when it closes the file,
    # so every real apply starts from a checkpointed database: measure that state.
    con.execute("CHECKPOINT")
    return elapsed


def open_warehouse(path: Path) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect(str(path))
    ensure_schema(con)
    ensure_history_state(con)
    return con


@dataclass
class Repetition:
    """Apply times (seconds) from one repetition."""

    sequential: list[float]  # snapshots 1..SNAPSHOTS, one sample each, in load order
    second: list[float]  # trials of snapshot 2 on a history of 1 snapshot
    last: list[float]  # trials of snapshot SNAPSHOTS on a history of SNAPSHOTS - 1


def repetition(directory: Path, seed: int, snapshots: int, trials: int) -> Repetition:
    """Load snapshots 1..snapshots into one database and snapshot 1 into a second; then time
    snapshot 2 on the short history and the last snapshot on the long one in alternation, so
    that both see the same machine load."""
    rng = np.random.default_rng(seed)
    short = open_warehouse(directory / f"short-{seed}.duckdb")
    long = open_warehouse(directory / f"long-{seed}.duckdb")
    try:
        listing = first_listing(rng)
        load(short, 1, listing, keep=True)
        sequential = [load(long, 1, listing, keep=True)]
        second_listing = listing = churned(listing, rng, 1)
        for index in range(2, snapshots):
            sequential.append(load(long, index, listing, keep=True))
            listing = churned(listing, rng, index)
        pairs = [
            (load(short, 2, second_listing, keep=False), load(long, snapshots, listing, keep=False))
            for _ in range(trials + 1)
        ][1:]  # the first pair warms both files up
        sequential.append(load(long, snapshots, listing, keep=True))
        return Repetition(sequential, [p[0] for p in pairs], [p[1] for p in pairs])
    finally:
        short.close()
        long.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--trials", type=int, default=6, help="paired samples per repetition")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="history-bench-") as name:
        directory = Path(name)
        repetition(directory, seed=0, snapshots=5, trials=1)  # warm-up: imports, first files
        runs = [
            repetition(directory, seed, SNAPSHOTS, args.trials)
            for seed in range(1, args.repetitions + 1)
        ]
    second = statistics.median(t for run in runs for t in run.second)
    last = statistics.median(t for run in runs for t in run.last)
    in_order = [statistics.median(ts) for ts in zip(*(r.sequential for r in runs), strict=True)]
    ratio = last / second
    paired = f"median of {args.repetitions * args.trials} paired samples"
    print(
        f"history_apply: {NUMBERS} numbers, {SNAPSHOTS} snapshots, {CHURN:.0%} churn, "
        f"{args.repetitions} repetitions"
    )
    print(f"  apply snapshot 2:    {second * 1000:8.2f} ms  ({paired})")
    print(f"  apply snapshot {SNAPSHOTS}:  {last * 1000:8.2f} ms  ({paired})")
    print(
        f"  in load order, median per index: snapshot 2 {in_order[1] * 1000:.2f} ms, "
        f"snapshot {SNAPSHOTS} {in_order[-1] * 1000:.2f} ms (one sample per repetition)"
    )
    verdict = "PASS" if ratio <= BOUND else "FAIL"
    print(f"  ratio {SNAPSHOTS}/2:         {ratio:8.2f}  (bound {BOUND})  {verdict}")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
