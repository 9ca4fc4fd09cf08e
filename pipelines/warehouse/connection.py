"""Opening the warehouse: the DuckDB file (the default) or a DuckLake.

One process writes the file at a time: a writer that finds it held waits a bounded time, then
names the holder. A DuckLake keeps its catalog in PostgreSQL and its data as Parquet files, so
many processes open it at once. A writer gets the schema created, on either.
"""

from __future__ import annotations

import json
import os
import random
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import duckdb

from pipelines.config import DUCKLAKE_VARIABLES, DuckLake
from pipelines.user_errors import UserError
from pipelines.warehouse.lake import LAKE, write_lake_options, write_lake_schema
from pipelines.warehouse.schema import SCHEMA_FILES, read_sql

T = TypeVar("T")
LOCK_HOLDER = re.compile(r"Conflicting lock is held in (?P<program>.*?) \(PID (?P<pid>\d+)\)")


class DatabaseLockedError(UserError):
    """Another process holds the DuckDB file for longer than we were willing to wait."""


class DatabaseUnusableError(UserError):
    """The warehouse cannot be opened, or holds no synthflow tables this connection can use;
    nothing was changed."""


POINT_AT_IT = "set SYNTHFLOW_DUCKDB_PATH to the synthflow database, or to a new path for `snapshot`"
HAS_SCHEMA = "SELECT count(*) FROM duckdb_schemas() WHERE schema_name = 'synthflow'"
LAKE_VARIABLES = " and ".join(DUCKLAKE_VARIABLES)
ATTACH_ATTEMPTS = 5
HAS_LAKE = (
    f"SELECT count(*) FROM duckdb_databases() WHERE database_name = '{LAKE}' AND type = 'ducklake'"
)


def _holder(message: str) -> str:
    match = LOCK_HOLDER.search(message)
    if not match:
        return "another process"
    pid = match["pid"]
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
    except OSError:
        command = match["program"]
    return f"process {pid} ({command[:120]})"


@contextmanager
def connect(
    warehouse: Path | DuckLake,
    *,
    read_only: bool = False,
    must_exist: bool = False,
    lock_timeout_s: float = 60.0,
    on_wait: Callable[[str], None] | None = None,
    memory_limit: str | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection to the warehouse; to a file, waiting up to `lock_timeout_s` while another
    process holds it. Writers get the file and schema created, unless `must_exist`: then, as for
    readers, a warehouse without the synthflow tables is refused (DatabaseUnusableError) and
    left as it was. `on_wait` is told once who holds the file, when it has to wait;
    `memory_limit` (a size such as 512MB) caps what DuckDB holds in memory."""
    must_exist = must_exist or read_only
    if isinstance(warehouse, DuckLake):
        con = _attach_lake(warehouse, read_only=read_only)
    else:
        con = _open_file(Path(warehouse), read_only, must_exist, lock_timeout_s, on_wait)
    try:
        con.execute("SET TimeZone = 'UTC'")  # times are read back in UTC, as stored
        if memory_limit:
            con.execute("SET memory_limit = ?", [memory_limit])
        if must_exist and not con.execute(HAS_SCHEMA).fetchone()[0]:
            raise DatabaseUnusableError(_without_tables(warehouse))
        if not read_only:
            ensure_schema(con)
        yield con
    finally:
        con.close()


def _open_file(
    path: Path,
    read_only: bool,
    must_exist: bool,
    lock_timeout_s: float,
    on_wait: Callable[[str], None] | None,
) -> duckdb.DuckDBPyConnection:
    _check_path(path, read_only=read_only, must_exist=must_exist)
    deadline = time.monotonic() + lock_timeout_s
    delay = 0.05
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as error:
            if "lock" not in str(error).lower():
                raise _unopenable(path, error) from None
            if on_wait:
                on_wait(_holder(str(error)))
                on_wait = None
            if time.monotonic() >= deadline:
                raise DatabaseLockedError(
                    f"the database {path} is in use by {_holder(str(error))}; waited "
                    f"{lock_timeout_s:g} s. Let that process finish (or close that connection) "
                    "and run again, or raise database.lock_timeout_s"
                ) from None
            time.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            delay = min(delay * 2, 1.0) * random.uniform(0.8, 1.2)


def _without_tables(warehouse: Path | DuckLake) -> str:
    if isinstance(warehouse, DuckLake):
        return (
            f"{warehouse} holds no synthflow tables yet; run `synthflow-numbers snapshot` "
            f"first, or point {LAKE_VARIABLES} at the synthflow warehouse"
        )
    return f"{warehouse} is a DuckDB file without the synthflow tables; {POINT_AT_IT}"


def sql_literal(text: str) -> str:
    """`text` as an SQL string literal, for what takes no parameters (ATTACH, COPY's target)."""
    return "'" + text.replace("'", "''") + "'"


def _attach_lake(lake: DuckLake, *, read_only: bool) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the DuckLake attached as its default database. The extensions
    come from the `ducklake` extra's packages, so no machine needs DuckDB's extension host."""
    try:
        from duckdb_extensions import import_extension
    except ImportError:
        raise DatabaseUnusableError(
            f"{LAKE_VARIABLES} name a DuckLake warehouse, which needs the `ducklake` extra: "
            "uv sync --extra ducklake (or unset them to use the DuckDB file)"
        ) from None
    failure = ""
    for _ in range(ATTACH_ATTEMPTS):
        con = duckdb.connect()
        try:
            for extension in ("ducklake", "postgres_scanner"):
                import_extension(extension, con=con)
            options = f"DATA_PATH {sql_literal(lake.data_path)}" + (
                ", READ_ONLY" if read_only else ""
            )
            con.execute(
                f"ATTACH {sql_literal('ducklake:postgres:' + lake.catalog)} AS {LAKE} ({options})"
            )
            con.execute(f"USE {LAKE}")
            return con
        except duckdb.Error as error:
            con.close()
            failure = str(error)
        if "Failed to initialize DuckLake" not in failure:
            break
        # Writers meeting on an empty catalog each create DuckLake's tables: all but one fail,
        # and find the lake made on their next try.
        time.sleep(random.uniform(0.05, 0.25))
    # A reader before any writer: the catalog holds no lake yet, and a reader creates none.
    if read_only and "creating a new DuckLake is explicitly disabled" in failure:
        raise DatabaseUnusableError(_without_tables(lake))
    raise DatabaseUnusableError(
        f"cannot open {lake} (catalog from SYNTHFLOW_DUCKLAKE_CATALOG): "
        f"{failure.splitlines()[0]}; check the catalog's host, database, user and password "
        "(PGPASSWORD) and the data path"
    )


IS_LAKE = (
    "SELECT type = 'ducklake' FROM duckdb_databases() WHERE database_name = current_database()"
)


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the `synthflow` schema, its tables (and history's bookkeeping) and views."""
    if con.execute(IS_LAKE).fetchone()[0]:
        committed(con, lambda: write_lake_schema(con), "the synthflow schema")
        committed(con, lambda: write_lake_options(con), "the synthflow schema's options")
    else:
        for name in SCHEMA_FILES:
            con.execute(read_sql(name))


@contextmanager
def cursor(con: duckdb.DuckDBPyConnection) -> Iterator[duckdb.DuckDBPyConnection]:
    """A cursor of its own on `con`'s warehouse, for any thread. On a DuckLake it uses the lake
    too: which database a connection reads by default is the connection's own."""
    with con.cursor() as own:
        if own.execute(HAS_LAKE).fetchone()[0]:
            own.execute(f"USE {LAKE}")
        yield own


# A commit that conflicts with another writer's (DuckLake's optimistic concurrency) is done
# again on what that writer committed, up to this many times, after a growing jittered pause.
COMMIT_ATTEMPTS = 30


def committed(
    con: duckdb.DuckDBPyConnection, work: Callable[[], T], message: str, **extra: str
) -> T:
    """`work()` as one transaction: committed whole, or rolled back and raised. On a DuckLake
    the commit carries `message` and `extra` (as JSON): `lake.snapshots()` shows them."""
    for attempt in range(1, COMMIT_ATTEMPTS):
        try:
            with _transaction(con, message, extra):
                return work()
        except duckdb.TransactionException as error:
            if "conflict" not in str(error).lower():
                raise
        time.sleep(random.uniform(0, min(1.0, 0.02 * 2**attempt)))
    with _transaction(con, message, extra):  # the last attempt: a conflict now is raised
        return work()


@contextmanager
def _transaction(
    con: duckdb.DuckDBPyConnection, message: str, extra: dict[str, str]
) -> Iterator[None]:
    con.execute("BEGIN TRANSACTION")
    if con.execute(IS_LAKE).fetchone()[0]:
        con.execute(
            f"CALL {LAKE}.set_commit_message('synthflow-numbers', ?, extra_info => ?)",
            [message, json.dumps(extra)],
        )
    try:
        yield
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")  # a commit that fails ends the transaction itself


def _check_path(path: Path, *, read_only: bool, must_exist: bool) -> None:
    """Refuse, before DuckDB touches anything, a path it could not open or write as asked.
    A writer needs the file and its folder writable: DuckDB keeps a `.wal` file beside it."""
    if path.is_dir():
        raise DatabaseUnusableError(f"{path} is a folder, not a database file; {POINT_AT_IT}")
    if not path.exists():
        if must_exist:
            raise DatabaseUnusableError(
                f"there is no database at {path} yet; run `synthflow-numbers snapshot` first, "
                "or point SYNTHFLOW_DUCKDB_PATH at the database"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise DatabaseUnusableError(
                f"cannot create the folder of the database {path}: {error.strerror}; create it "
                "or point SYNTHFLOW_DUCKDB_PATH elsewhere"
            ) from None
    if not read_only and not all(
        os.access(place, os.W_OK) for place in (path.parent, path) if place.exists()
    ):
        raise DatabaseUnusableError(
            f"the database {path} or its folder is read-only (DuckDB writes the file and a "
            ".wal beside it); make both writable or point SYNTHFLOW_DUCKDB_PATH elsewhere"
        )


def _unopenable(path: Path, error: duckdb.IOException) -> DatabaseUnusableError:
    """What DuckDB's refusal to open a file (other than a lock) means for the user."""
    if "not a valid DuckDB database file" in str(error):
        return DatabaseUnusableError(f"{path} is not a DuckDB database file; {POINT_AT_IT}")
    reason = str(error).removeprefix("IO Error: ")
    return DatabaseUnusableError(f"cannot open the database {path}: {reason}; {POINT_AT_IT}")
