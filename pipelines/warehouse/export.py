"""Export to Parquet, partitioned by workspace and date, for any warehouse or engine.

Layout: `DIR/<table>/workspace_id=<id>/date=<YYYY-MM-DD>/*.parquet` (Hive partitioning), the
date being that of `taken_at` (snapshots), `valid_from` (history) or `changed_at` (changes),
in UTC. An export replaces what an earlier export wrote for the same tables.
"""

import shutil
from pathlib import Path

import duckdb

EXPORTS = {
    "snapshots": "SELECT *, CAST(timezone('UTC', taken_at) AS DATE) AS date "
    "FROM synthflow.snapshots",
    "number_snapshots": "SELECT *, CAST(timezone('UTC', taken_at) AS DATE) AS date "
    "FROM synthflow.number_snapshots",
    "number_history": "SELECT *, CAST(timezone('UTC', valid_from) AS DATE) AS date "
    "FROM synthflow.number_history",
    "number_changes": "SELECT *, CAST(timezone('UTC', changed_at) AS DATE) AS date "
    "FROM synthflow.number_changes",
}


def _literal(path: Path) -> str:
    # COPY takes its target as a literal, not a parameter: quote it as SQL does.
    return "'" + str(path).replace("'", "''") + "'"


def export_parquet(con: duckdb.DuckDBPyConnection, directory: Path) -> dict[str, int]:
    """Write every table under `directory`; returns the rows written per table."""
    directory.mkdir(parents=True, exist_ok=True)
    written = {}
    for table, query in EXPORTS.items():
        target = directory / table
        if target.exists():
            shutil.rmtree(target)
        count = con.execute(f"SELECT count(*) FROM ({query})").fetchone()[0]
        if count:
            con.execute(
                f"COPY ({query}) TO {_literal(target)} "
                "(FORMAT parquet, PARTITION_BY (workspace_id, date))"
            )
        written[table] = count
    return written
