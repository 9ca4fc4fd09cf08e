"""Checkpoints: when what was committed is written into the DuckDB file.

A run defers them while it stores and checkpoints once after; on a DuckLake, where a commit is
already in its files, CHECKPOINT merges small files instead and is the operator's (`maintain`).
"""

from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from pipelines.warehouse.connection import IS_LAKE, cursor

# The write-ahead log a run may grow before DuckDB checkpoints on its own.
RUN_CHECKPOINT_THRESHOLD = "1GB"


@contextmanager
def checkpoints_deferred(con: duckdb.DuckDBPyConnection) -> Iterator[None]:
    """No checkpoint during a run's stores, not one every 16 MB of write-ahead log: each
    writes number_snapshots' primary-key index whole, over half the storing time of a
    million-number run. Every store is still committed to the log; `checkpoint` follows."""
    (threshold,) = con.execute("SELECT current_setting('checkpoint_threshold')").fetchone()
    con.execute(f"SET checkpoint_threshold = '{RUN_CHECKPOINT_THRESHOLD}'")
    try:
        yield
    finally:
        con.execute(f"SET checkpoint_threshold = '{threshold}'")


def checkpoint(con: duckdb.DuckDBPyConnection) -> None:
    """Write what was committed into the database file, on a cursor of its own. FORCE waits
    for queries on other cursors to finish; a plain CHECKPOINT would fail beside them.

    A DuckLake commit is already in its files: there CHECKPOINT is maintenance (merging small
    files), which conflicts with other writers' commits, so it is the operator's, not a run's
    (`maintain`)."""
    with cursor(con) as own:
        if not own.execute(IS_LAKE).fetchone()[0]:
            own.execute("FORCE CHECKPOINT")


def maintain(con: duckdb.DuckDBPyConnection) -> None:
    """CHECKPOINT by hand: on the file, what was committed written into it; on a DuckLake, its
    small files merged into larger ones, which conflicts with a run committing meanwhile."""
    con.execute("CHECKPOINT")
