"""The warehouse tables and views, created idempotently on every connection that writes."""

from importlib import resources

import duckdb


def read_sql(name: str) -> str:
    """The text of `pipelines/warehouse/sql/<name>`."""
    return resources.files("pipelines.warehouse").joinpath("sql", name).read_text()


def ensure_schema(con: duckdb.DuckDBPyConnection) -> None:
    """Create the `synthflow` schema, its tables (and history's bookkeeping) and views."""
    con.execute(read_sql("schema.sql"))
    con.execute(read_sql("history_state.sql"))
    con.execute(read_sql("views.sql"))
