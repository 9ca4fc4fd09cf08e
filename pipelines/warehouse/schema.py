"""The warehouse's SQL files, and the descriptions of its tables and columns.

`sql/schema.sql` is the one place where each table and column is described (`COMMENT ON`);
`table_description` and `columns` read them back for Dagster's assets and column schemas.
"""

from functools import cache
from importlib import resources

import duckdb

SCHEMA_FILES = ("schema.sql", "history_state.sql", "views.sql", "analytics.sql")
TABLE_COMMENT = (
    "SELECT comment FROM duckdb_tables() WHERE schema_name = 'synthflow' AND table_name = ?"
)
TABLE_COLUMNS = """
SELECT column_name, data_type, comment FROM duckdb_columns()
WHERE schema_name = 'synthflow' AND table_name = ? ORDER BY column_index
"""


HAS_TABLE = """
SELECT count(*) FROM duckdb_tables()
WHERE database_name = current_database() AND schema_name = 'synthflow' AND table_name = ?
"""


def has_table(con: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether `synthflow.<table>` exists in the connection's database."""
    return con.execute(HAS_TABLE, [table]).fetchone()[0] > 0


def read_sql(name: str) -> str:
    """The text of `pipelines/warehouse/sql/<name>`."""
    return resources.files("pipelines.warehouse").joinpath("sql", name).read_text()


@cache
def _schema_only() -> duckdb.DuckDBPyConnection:
    """An in-memory database holding just the schema, to read its descriptions from."""
    con = duckdb.connect(":memory:")
    con.execute(read_sql("schema.sql"))
    return con


def table_description(table: str) -> str:
    """The description of `synthflow.<table>`."""
    return _schema_only().cursor().execute(TABLE_COMMENT, [table]).fetchone()[0]


def columns(table: str) -> list[tuple[str, str, str | None]]:
    """(name, type, description) of each column of `synthflow.<table>`, in order."""
    return _schema_only().cursor().execute(TABLE_COLUMNS, [table]).fetchall()
