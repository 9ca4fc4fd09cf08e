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


@cache
def _lake_statements() -> tuple[tuple[str, ...], str]:
    """The schema's statements as DuckLake takes them, and their fingerprint."""
    with duckdb.connect() as con:
        statements = tuple(
            PRIMARY_KEY.sub("", statement.query)
            for name in SCHEMA_FILES
            for statement in con.extract_statements(read_sql(name))
        )
    return statements, hashlib.sha256("\n".join(statements).encode()).hexdigest()


def write_lake_schema(con: duckdb.DuckDBPyConnection) -> None:
    """The schema, unless the lake holds this version of it already (call in a transaction)."""
    statements, fingerprint = _lake_statements()
    if has_table(con, "lake_schema") and con.execute(LAKE_SCHEMA_FINGERPRINT).fetchone() == (
        fingerprint,
    ):
        return
    for sql in statements:
        refused = duckdb.BinderException if sql.lstrip().startswith("COMMENT") else ()
        with contextlib.suppress(refused):
            con.execute(sql)
    con.execute(LAKE_SCHEMA_RECORD)
    con.execute("DELETE FROM synthflow.lake_schema")
    con.execute("INSERT INTO synthflow.lake_schema VALUES (?)", [fingerprint])
