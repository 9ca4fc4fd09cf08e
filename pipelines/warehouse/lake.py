"""What a DuckLake takes of the warehouse's schema, and when it is written.

DuckLake has no primary keys and keeps no description of a view's column or of a macro: those
are left out. Each write of the schema is a commit to the catalog, which would conflict with
every other writer's, so it is written only when the lake holds another version of it (its
fingerprint, in `synthflow.lake_schema`).
"""

import contextlib
import hashlib
import re
from functools import cache

import duckdb

from pipelines.warehouse.schema import SCHEMA_FILES, has_table, read_sql

LAKE_SCHEMA_FINGERPRINT = "SELECT fingerprint FROM synthflow.lake_schema"
LAKE_SCHEMA_RECORD = """
CREATE TABLE IF NOT EXISTS synthflow.lake_schema (fingerprint VARCHAR NOT NULL);
COMMENT ON TABLE synthflow.lake_schema IS 'Bookkeeping: the schema version this lake holds.';
"""
# Storing keeps the keys instead (a snapshot replaced whole, a listing's numbers unique) and
# the checks verify them.
PRIMARY_KEY = re.compile(r",\s*PRIMARY KEY \([^)]*\)|\s+PRIMARY KEY\b")
LAKE = "lake"  # the name a DuckLake is attached under
# History's rows are never inlined (kept in the catalog while few): inlined, a transaction
# that rebuilt a workspace's history after inserting some of it lost versions, every time
# (tests/test_ducklake.py). DuckLake 1.5.5 loses rows a transaction inserted into an inlined
# table after rows it then updates and deletes. The other tables inline as DuckLake does by
# default. DuckLake sets no option of a table created in the same transaction: they are a
# commit of their own.
LAKE_OPTIONS = (
    f"CALL {LAKE}.set_option('data_inlining_row_limit', 0, schema => 'synthflow', "
    "table_name => 'number_history')",
)


@cache
def _lake_statements() -> tuple[tuple[str, ...], str]:
    """The schema's statements as DuckLake takes them, and the fingerprint of them and the
    options."""
    with duckdb.connect() as con:
        statements = tuple(
            PRIMARY_KEY.sub("", statement.query)
            for name in SCHEMA_FILES
            for statement in con.extract_statements(read_sql(name))
        )
    fingerprint = hashlib.sha256("\n".join(statements + LAKE_OPTIONS).encode()).hexdigest()
    return statements, fingerprint


def _current(con: duckdb.DuckDBPyConnection) -> bool:
    """Whether the lake holds this version of the schema and its options."""
    if not has_table(con, "lake_schema"):
        return False
    return con.execute(LAKE_SCHEMA_FINGERPRINT).fetchone() == (_lake_statements()[1],)


def write_lake_schema(con: duckdb.DuckDBPyConnection) -> None:
    """The schema's statements, unless the lake is current (call in a transaction)."""
    if _current(con):
        return
    for sql in _lake_statements()[0]:
        refused = duckdb.BinderException if sql.lstrip().startswith("COMMENT") else ()
        with contextlib.suppress(refused):
            con.execute(sql)
    con.execute(LAKE_SCHEMA_RECORD)


def write_lake_options(con: duckdb.DuckDBPyConnection) -> None:
    """After `write_lake_schema`, in a transaction of its own: the tables' options, then the
    fingerprint that makes the lake current."""
    if _current(con):
        return
    for sql in LAKE_OPTIONS:
        con.execute(sql)
    con.execute("DELETE FROM synthflow.lake_schema")
    con.execute("INSERT INTO synthflow.lake_schema VALUES (?)", [_lake_statements()[1]])
