"""How long does storing a run's listings take, history included?

Stores 100 workspaces x 10,000 numbers into a fresh DuckDB file the way a run does: pandas
frames shaped like `listing_frame`'s, `store_snapshots` over groups of 20 workspaces (200,000
rows, the run's GROUP_ROWS), checkpoints deferred to the end of the run. Then, in a second
run on the reopened file, a second snapshot of the same workspaces with 1% churn (a quarter
each of removals, additions, availability flips and sid changes). The listings are built
before the clock starts; the stores and the run's closing CHECKPOINT are timed apart.

With `--baseline DIR` (a copy of the project's `pipelines` package, e.g. from `git archive
HEAD pipelines | tar -x -C DIR`), each round runs once against DIR and once against this
tree, alternating, each in its own process, and the medians and their ratio are printed;
both must end with the same change counts and the same history and changes (a digest of
each table).

Run: .venv/bin/python benchmarks/store_group.py [--rounds 3] [--baseline /tmp/before]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

WORKSPACES = 100
NUMBERS = 10_000
GROUP = 20  # workspaces per store_snapshots call: 200,000 rows
CHURN = 0.01
T0 = datetime(2025, 1, 1, tzinfo=UTC)
PROJECT = Path(__file__).resolve().parent.parent


def first_listing(workspace: int, rng: np.random.Generator) -> dict[str, list]:
    """A workspace's numbers (number, sid, is_available, country), half of them assigned, in
    no particular order (as the API lists them: not sorted by number)."""
    order = rng.permutation(NUMBERS).tolist()
    available = (rng.random(NUMBERS) < 0.5).tolist()
    return {
        "number": [f"+1555{workspace:03d}{i:05d}" for i in order],
        "sid": [
            None if free else f"PN{workspace:03d}{i:05d}"
            for i, free in zip(order, available, strict=True)
        ],
        "is_available": available,
        "country": ["US"] * NUMBERS,
    }


def churned(listing: dict[str, list], workspace: int, rng: np.random.Generator) -> dict:
    """The next listing: 1% of the numbers change, a quarter each way of changing."""
    quarter = int(NUMBERS * CHURN) // 4
    removed, flipped, resid = np.split(rng.choice(NUMBERS, size=3 * quarter, replace=False), 3)
    after = {name: list(values) for name, values in listing.items()}
    for i in flipped:
        after["is_available"][i] = not after["is_available"][i]
    for i in resid:
        after["sid"][i] = f"PX{workspace:03d}{i:05d}"
    gone = set(removed.tolist())
    after = {name: [v for i, v in enumerate(vs) if i not in gone] for name, vs in after.items()}
    after["number"] += [f"+1666{workspace:03d}{i:05d}" for i in range(quarter)]
    after["sid"] += [None] * quarter
    after["is_available"] += [True] * quarter
    after["country"] += ["US"] * quarter
    return after


def listings(run: int, columns: list[dict[str, list]]) -> list[tuple]:
    """(SnapshotRow, frame) per workspace, as the snapshot step hands them to the store: the
    numbers' columns as a pandas frame of Arrow-backed columns (`listing_frame`'s)."""
    from pipelines.warehouse.store import SnapshotRow

    run_id = str(uuid.UUID(int=run))  # a Dagster run id: a UUID
    rows = []
    for workspace, numbers in enumerate(columns):
        count = len(numbers["number"])
        workspace_id = f"{1_700_000_000_000 + workspace}x{10**17 + workspace}"  # Synthflow's shape
        snapshot = SnapshotRow(
            snapshot_id=f"{workspace_id}/{run_id}",  # as pipelines.snapshot names them
            workspace_id=workspace_id,
            taken_at=T0 + timedelta(hours=run, seconds=workspace),
            total_records=count,
            row_count=count,
            page_count=10,
            run_id=run_id,
        )
        frame = pa.table(
            {
                "number": pa.array(numbers["number"], pa.string()),
                "sid": pa.array(numbers["sid"], pa.string()),
                "is_available": pa.array(numbers["is_available"], pa.bool_()),
                "country": pa.array(numbers["country"], pa.string()),
            }
        ).to_pandas(types_mapper=pd.ArrowDtype)
        rows.append((snapshot, frame))
    return rows


DIGEST = """
SELECT (SELECT [count(*), sum(hash(workspace_id, number, is_available, sid, valid_from,
                                   valid_to, is_current))] FROM synthflow.number_history)
    || (SELECT [count(*), sum(hash(workspace_id, number, changed_at, previous_taken_at,
                                   snapshot_id, change_type, was_available, is_available))]
        FROM synthflow.number_changes)
"""


def timed_run(path: Path, rows: list[tuple]) -> tuple[float, float, dict[str, int], str]:
    """Store `rows` in groups as one run does: (store seconds, checkpoint seconds, change
    counts, a digest of number_history and number_changes)."""
    from pipelines.warehouse.connection import connect
    from pipelines.warehouse.store import store_snapshots

    totals: dict[str, int] = {}
    with connect(path) as con:
        con.execute("SET checkpoint_threshold = '1GB'")  # as pipelines.snapshot does
        gc.collect()
        started = time.perf_counter()
        for start in range(0, len(rows), GROUP):
            for changes in store_snapshots(con, rows[start : start + GROUP]):
                for kind, count in changes.items():
                    totals[kind] = totals.get(kind, 0) + count
        stored = time.perf_counter()
        con.execute("CHECKPOINT")
        checkpointed = time.perf_counter()
        digest = str(con.execute(DIGEST).fetchone()[0])
    return stored - started, checkpointed - stored, totals, digest


def one_round(seed: int) -> dict:
    """A fresh file, the first run, then the second run with 1% churn."""
    import pipelines

    rng = np.random.default_rng(seed)
    first = [first_listing(w, rng) for w in range(WORKSPACES)]
    second = [churned(listing, w, rng) for w, listing in enumerate(first)]
    first_rows, second_rows = listings(1, first), listings(2, second)
    with tempfile.TemporaryDirectory(prefix="store-group-") as name:
        path = Path(name) / "numbers.duckdb"
        first_store, first_checkpoint, first_counts, first_digest = timed_run(path, first_rows)
        second = timed_run(path, second_rows)
        second_store, second_checkpoint, second_counts, second_digest = second
    return {
        "pipelines": pipelines.__file__,
        "first_store": first_store,
        "first_checkpoint": first_checkpoint,
        "second_store": second_store,
        "second_checkpoint": second_checkpoint,
        "counts": [first_counts, second_counts],
        "digests": [first_digest, second_digest],
    }


def in_child(seed: int, tree: Path) -> dict:
    """One round in a child process that imports `pipelines` from `tree`."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    child = subprocess.run(
        [sys.executable, __file__, "--one-round", str(seed)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    outcome = json.loads(child.stdout)
    if not Path(outcome["pipelines"]).is_relative_to(tree):
        raise SystemExit(f"the child imported {outcome['pipelines']}, not the tree {tree}")
    return outcome


FIGURES = ("first_store", "first_checkpoint", "second_store", "second_checkpoint")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--baseline", type=Path, help="a tree holding the pipelines package")
    parser.add_argument("--one-round", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one_round is not None:
        print(json.dumps(one_round(args.one_round)))
        return 0
    trees = {"this tree": PROJECT}
    if args.baseline:
        trees = {"baseline": args.baseline.resolve(), **trees}
    results: dict[str, list[dict]] = {name: [] for name in trees}
    for seed in range(args.rounds):
        for name, tree in trees.items():
            outcome = in_child(seed, tree)
            results[name].append(outcome)
            shown = ", ".join(f"{f} {outcome[f]:.2f}" for f in FIGURES)
            print(f"  round {seed + 1} {name}: {shown}", flush=True)
    print(
        f"store_group: {WORKSPACES} workspaces x {NUMBERS} numbers, groups of {GROUP}, "
        f"second run {CHURN:.0%} churn; medians of {args.rounds} rounds, seconds"
    )
    medians = {
        name: {f: statistics.median(r[f] for r in rounds) for f in FIGURES}
        for name, rounds in results.items()
    }
    for name, figures in medians.items():
        print(f"  {name:10s} " + "  ".join(f"{f} {v:6.2f}" for f, v in figures.items()))
    answers = {
        name: [(r["counts"], r["digests"]) for r in rounds] for name, rounds in results.items()
    }
    print(f"  change counts (second run): {results['this tree'][0]['counts'][1]}")
    if args.baseline:
        for figure in FIGURES:
            ratio = medians["this tree"][figure] / medians["baseline"][figure]
            print(f"  ratio this/baseline {figure}: {ratio:.2f}")
        if answers["this tree"] != answers["baseline"]:
            print("  MISMATCH: the two trees end with different counts or history")
            return 1
        print("  both trees: the same change counts, history and changes in every round")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
