"""A real `dagster-webserver` at the project root, read through its GraphQL API."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.services import BIN, Service, service, wait_until

STARTUP_S = 120
LOCATION = "synthflow_numbers"
LOCATION_STATUS = """
{
  workspaceOrError {
    ... on Workspace {
      locationEntries {
        name loadStatus
        locationOrLoadError { __typename ... on PythonError { message } }
      }
    }
  }
}
"""


@dataclass(frozen=True)
class Webserver:
    url: str
    workspace_ids: list[str]
    process: Service

    def graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        answer = httpx.post(
            f"{self.url}/graphql", json={"query": query, "variables": variables or {}}, timeout=60
        )
        answer.raise_for_status()
        body = answer.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def server_info(url: str):
    def probe() -> bool | None:
        try:
            return True if httpx.get(f"{url}/server_info", timeout=5).status_code == 200 else None
        except httpx.HTTPError:
            return None

    return probe


def location_loaded(server: Webserver):
    def probe() -> bool | None:
        entries = server.graphql(LOCATION_STATUS)["workspaceOrError"]["locationEntries"]
        entry = next((e for e in entries if e["name"] == LOCATION), None)
        if entry is None or entry["loadStatus"] != "LOADED":
            return None
        loaded = entry["locationOrLoadError"]
        if loaded["__typename"] == "PythonError":
            pytest.fail(f"the code location failed to load: {loaded['message']}")
        return True

    return probe


@contextlib.contextmanager
def webserver_at(
    port: int, env: Mapping[str, str], log_dir: Path, workspace_ids: list[str]
) -> Iterator[Webserver]:
    """`dagster-webserver -w workspace.yaml` on `port`, once its code location has loaded."""
    command = [
        str(BIN / "dagster-webserver"),
        *("-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"),
    ]
    with service("webserver", command, env, log_dir) as process:
        server = Webserver(f"http://127.0.0.1:{port}", workspace_ids, process)
        wait_until(
            server_info(server.url),
            timeout_s=STARTUP_S,
            what="/server_info",
            services=(process,),
            interval_s=0.5,
        )
        wait_until(
            location_loaded(server),
            timeout_s=STARTUP_S,
            what=f"the code location {LOCATION} to load",
            services=(process,),
            interval_s=0.5,
        )
        yield server
