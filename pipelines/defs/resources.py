"""Dagster resources: the Synthflow API (keys from environment variables) and the DuckDB file."""

import os
from contextlib import AbstractContextManager
from pathlib import Path

import dagster as dg
import duckdb

from pipelines.config import DuckLake, Settings, Workspace, load_settings
from pipelines.config.values import DEFAULT_KEY_VARIABLE
from pipelines.warehouse.connection import connect


class SynthflowResource(dg.ConfigurableResource):
    """Settings and keys for the Synthflow API.

    `api_key` is set with `dg.EnvVar("SYNTHFLOW_API_KEY")` so the UI shows the variable's name,
    never its value; workspaces with their own `api_key_env` read that variable at run time.
    """

    api_key: str | None = None
    config_file: str | None = None

    def settings(self) -> Settings:
        environ = dict(os.environ)
        if self.config_file:
            environ["SYNTHFLOW_CONFIG"] = self.config_file
        return load_settings(environ)

    def api_key_for(self, workspace: Workspace) -> str:
        if workspace.api_key_env == DEFAULT_KEY_VARIABLE and self.api_key:
            return self.api_key
        return workspace.api_key()


class WarehouseResource(dg.ConfigurableResource):
    """The DuckDB file, or a DuckLake when its catalog is set; every connection to the file
    waits a bounded time for another writer."""

    path: str
    ducklake_catalog: str | None = None  # libpq keywords, no password (config.DuckLake)
    ducklake_data_path: str | None = None
    lock_timeout_s: float = 60.0
    memory_limit: str | None = None  # database.memory_limit

    def connect(
        self, *, read_only: bool = False, lock_timeout_s: float | None = None
    ) -> AbstractContextManager[duckdb.DuckDBPyConnection]:
        """`lock_timeout_s`, when given, instead of the configured wait."""
        wait = self.lock_timeout_s if lock_timeout_s is None else lock_timeout_s
        warehouse = (
            DuckLake(catalog=self.ducklake_catalog, data_path=self.ducklake_data_path)
            if self.ducklake_catalog and self.ducklake_data_path
            else Path(self.path)
        )
        return connect(
            warehouse,
            read_only=read_only,
            lock_timeout_s=wait,
            memory_limit=self.memory_limit,
        )
