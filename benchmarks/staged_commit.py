"""What is left to do after a listing's last page, with its front staged and without?

`pipelines/snapshot.py` stages a listing of STAGE_MIN_ROWS to STAGE_MAX_ROWS numbers: its rows
go into an open transaction in chunks of LEADING_CHUNK_ROWS while the rest is read, and only
the rest, history and the commit remain after the last page. That remainder is timed here both
ways, on a fresh DuckDB file, with rows shaped like `listing_table`'s (history left out: it is
the same either way):

- one insert: the whole listing inserted, then COMMIT (a listing that is not staged);
- staged: every chunk but the last inserted before the clock starts (during the read, in a
  run), then the last chunk and COMMIT.

The staged inserts themselves are not free: in a run they use CPU while pages are read, which
pays when the reads wait on the network and not when they are CPU-bound. Prints the median of
the alternated rounds and staged / one insert.

Run: .venv/bin/python benchmarks/staged_commit.py [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.synthflow.listing import LEADING_CHUNK_ROWS
from pipelines.warehouse.store import StagedSnapshot, connect

SIZES = (50_000, 100_000, 120_000, 130_000, 200_000)
WORKSPACE = "1654381216654x899645092356557688"
SNAPSHOT_ID = f"{WORKSPACE}/0b6e5c1e-7d4f-4a7e-9a51-3c2f2d7e9b10"


def listing_rows(count: int) -> pa.Table:
    return pa.table(
        {
            "snapshot_id": pa.array([SNAPSHOT_ID] * count).dictionary_encode(),
            "workspace_id": pa.array([WORKSPACE] * count).dictionary_encode(),
            "taken_at": pa.array([1_764_504_000_000_000] * count, pa.timestamp("us", tz="UTC")),
            "number": [f"+1415{n:07d}" for n in range(count)],
            "sid": [f"PN{n:032x}" for n in range(count)],
            "is_available": [n % 3 == 0 for n in range(count)],
            "country": ["US"] * count,
        }
    )


def after_last_page(rows: pa.Table, staged: bool, work: Path) -> float:
    """Seconds from the last page to the commit's end, on a fresh file."""
    path = work / f"{time.monotonic_ns()}.duckdb"
    with connect(path) as con:
        con.execute("SET checkpoint_threshold = '1GB'")  # as a run does
        staging = StagedSnapshot(con, SNAPSHOT_ID)
        last = rows.num_rows - LEADING_CHUNK_ROWS if staged else 0
        for start in range(0, last, LEADING_CHUNK_ROWS):
            staging.add(rows.slice(start, LEADING_CHUNK_ROWS))
        started = time.perf_counter()
        staging.add(rows.slice(last))
        con.execute("COMMIT")
        return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    rounds = parser.parse_args().rounds
    print(f"after the last page, median of {rounds} rounds (chunks of {LEADING_CHUNK_ROWS:,})")
    print(f"{'rows':>8} {'one insert':>11} {'staged':>8} {'staged / one':>13}")
    with tempfile.TemporaryDirectory() as work:
        for size in SIZES:
            rows = listing_rows(size)
            times: dict[bool, list[float]] = {False: [], True: []}
            for _ in range(rounds):
                for staged in (False, True):  # alternated: the machine's speed drifts
                    times[staged].append(after_last_page(rows, staged, Path(work)))
            one, chunked = statistics.median(times[False]), statistics.median(times[True])
            print(f"{size:>8,} {one:>10.3f}s {chunked:>7.3f}s {chunked / one:>13.2f}")


if __name__ == "__main__":
    main()
