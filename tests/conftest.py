"""Shared fixtures: a real simulator on loopback, an environment pointing at it, and a webhook
receiver."""

import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager as ContextManager
from contextlib import closing
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import duckdb
import pytest

from pipelines.config import DuckLake
from pipelines.synthflow.simulator import Simulator, demo_simulator
from pipelines.warehouse.connection import connect
from tests.history_cases import new_warehouse
from tests.pg import PostgresServer, running_postgres

TEST_KEY = "sk-test-0000-made-up-token"


@pytest.fixture
def simulator() -> Iterator[Simulator]:
    """Three seeded workspaces of 60 numbers, served on a free loopback port."""
    with demo_simulator(seed=3, workspaces=3, numbers_per_workspace=60) as sim:
        yield sim


# scripts/test runs the contract tests a second time, on DuckLake, with this set.
ON_DUCKLAKE = os.environ.get("SYNTHFLOW_TEST_WAREHOUSE") == "ducklake"


@pytest.fixture(scope="session")
def lake_catalog_server() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def new_lake(server: PostgresServer, directory: Path, monkeypatch: pytest.MonkeyPatch) -> DuckLake:
    """An empty DuckLake: a new catalog database on the server, a new data folder; the password
    in PGPASSWORD, as the README asks."""
    database = server.create_database(f"lake_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("PGPASSWORD", server.password)
    return DuckLake(
        catalog=f"dbname={database} host={server.host} port={server.port} user={server.user}",
        data_path=str(directory / "lake"),
    )


@pytest.fixture(scope="session")
def empty_warehouse(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[[], ContextManager[duckdb.DuckDBPyConnection]]]:
    """Opens an empty warehouse for each example of a property test (which takes no function
    fixtures): in memory, or on the DuckLake run a fresh lake of its own."""
    if not ON_DUCKLAKE:
        yield lambda: closing(new_warehouse())
        return
    server = request.getfixturevalue("lake_catalog_server")
    lakes = tmp_path_factory.mktemp("lakes")
    with pytest.MonkeyPatch.context() as patch:
        yield lambda: connect(new_lake(server, lakes / uuid.uuid4().hex, patch))


@pytest.fixture
def warehouse(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Path | DuckLake:
    """Where a contract test stores: a fresh DuckDB file, or on the DuckLake run a fresh lake."""
    if not ON_DUCKLAKE:
        return tmp_path / "db.duckdb"
    return new_lake(request.getfixturevalue("lake_catalog_server"), tmp_path, monkeypatch)


@pytest.fixture
def synthflow_env(
    simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, str]:
    """Environment variables that point the project at the simulator and a fresh DuckDB file.

    Fast retries: the config file keeps every backoff short so fault tests stay quick.
    """
    config = tmp_path / "synthflow.yaml"
    config.write_text("fetch:\n  max_backoff_s: 0.02\n  max_retries: 3\n  page_size: 25\n")
    env = {
        "SYNTHFLOW_BASE_URL": simulator.base_url,
        "SYNTHFLOW_WORKSPACES": ",".join(simulator.workspace_ids()),
        "SYNTHFLOW_API_KEY": TEST_KEY,
        "SYNTHFLOW_DUCKDB_PATH": str(tmp_path / "numbers.duckdb"),
        "SYNTHFLOW_CONFIG": str(config),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return env


@pytest.fixture
def webhook():
    """A loopback receiver that records every JSON body posted to it."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()
