"""What the Dagster UI shows, read through a real `dagster-webserver`'s GraphQL API.

Contract: `dagster-webserver -w workspace.yaml` at the project root loads the code location
and shows the three assets (number_snapshots with one partition per configured workspace,
number_history and number_changes as whole tables), each with a description, kinds and the
owning team; the six checks on the assets they verify; the schedule snapshot_schedule with the
cron and timezone from the config, running by default; and the API key only as the name of
its variable, never its value.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from pipelines.synthflow.simulator import demo_simulator
from tests.conftest import TEST_KEY
from tests.pg import free_port
from tests.services import BIN, PROJECT_ROOT, Service, clean_environment, service, wait_until

STARTUP_S = 120
CRON = "30 5 * * 1-5"
TIMEZONE = "Europe/Berlin"
LOCATION = "synthflow_numbers"
ASSETS = {
    "synthflow/number_snapshots": {"row_count_matches_total", "numbers_unique", "numbers_are_e164"},
    "synthflow/number_history": {
        "no_overlapping_versions",
        "one_open_version_per_number",
        "changes_match_versions",
    },
    "synthflow/number_changes": set(),
}

ASSETS_AND_SCHEDULES = """
{
  assetNodes {
    assetKey { path }
    partitionKeys
    kinds
    description
    owners { ... on TeamAssetOwner { team } ... on UserAssetOwner { email } }
    assetChecksOrError { ... on AssetChecks { checks { name } } }
  }
  repositoriesOrError {
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        schedules {
          name cronSchedule executionTimezone pipelineName scheduleState { status }
        }
      }
    }
  }
}
"""
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
RESOURCES = """
query Resources($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
    ... on ResourceDetailsList { results { name configuredValues { key value type } } }
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


@pytest.fixture(scope="module")
def webserver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webserver]:
    tmp = tmp_path_factory.mktemp("webserver")
    home = tmp / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    config = tmp / "synthflow.yaml"
    config.write_text(f'schedule:\n  cron: "{CRON}"\n  timezone: {TIMEZONE}\n')
    port = free_port()
    with demo_simulator(seed=7, workspaces=3, numbers_per_workspace=10) as simulator:
        env = clean_environment(
            {
                "DAGSTER_HOME": str(home),
                "SYNTHFLOW_BASE_URL": simulator.base_url,
                "SYNTHFLOW_WORKSPACES": ",".join(simulator.workspace_ids()),
                "SYNTHFLOW_API_KEY": TEST_KEY,
                "SYNTHFLOW_DUCKDB_PATH": str(tmp / "numbers.duckdb"),
                "SYNTHFLOW_CONFIG": str(config),
            }
        )
        command = [
            str(BIN / "dagster-webserver"),
            *("-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"),
        ]
        with service("webserver", command, env, tmp) as process:
            server = Webserver(f"http://127.0.0.1:{port}", simulator.workspace_ids(), process)
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


@pytest.fixture(scope="module")
def shown(webserver: Webserver) -> dict[str, Any]:
    return webserver.graphql(ASSETS_AND_SCHEDULES)


def asset_nodes(shown: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {"/".join(node["assetKey"]["path"]): node for node in shown["assetNodes"]}


def test_snapshots_have_a_partition_per_workspace_and_history_is_whole(webserver, shown):
    nodes = asset_nodes(shown)
    assert set(nodes) == set(ASSETS)
    partitioned = nodes.pop("synthflow/number_snapshots")
    assert sorted(partitioned["partitionKeys"]) == sorted(webserver.workspace_ids)
    for key, node in nodes.items():
        assert node["partitionKeys"] == [], key


def test_each_asset_shows_its_checks(shown):
    nodes = asset_nodes(shown)
    for key, checks in ASSETS.items():
        shown_checks = nodes[key]["assetChecksOrError"].get("checks", [])
        assert {check["name"] for check in shown_checks} == checks, key


def test_each_asset_has_a_description_kinds_and_an_owning_team(shown):
    for key, node in asset_nodes(shown).items():
        assert node["description"], key
        assert {"synthflow", "duckdb"} <= set(node["kinds"]), key
        assert {"team": "synthflow-numbers"} in node["owners"], key


def test_the_schedule_runs_the_job_on_the_configured_cron(shown):
    (repository,) = shown["repositoriesOrError"]["nodes"]
    assert repository["location"]["name"] == LOCATION
    (schedule,) = repository["schedules"]
    assert schedule["name"] == "snapshot_schedule"
    assert schedule["pipelineName"] == "snapshot_job"
    assert schedule["cronSchedule"] == CRON
    assert schedule["executionTimezone"] == TIMEZONE
    assert schedule["scheduleState"]["status"] == "RUNNING"


def test_the_api_key_is_shown_only_as_its_variable_name(webserver, shown):
    (repository,) = shown["repositoriesOrError"]["nodes"]
    selector = {
        "repositoryLocationName": repository["location"]["name"],
        "repositoryName": repository["name"],
    }
    data = webserver.graphql(RESOURCES, {"selector": selector})
    resources = {
        resource["name"]: resource["configuredValues"]
        for resource in data["allTopLevelResourceDetailsOrError"]["results"]
    }
    assert {"key": "api_key", "value": "SYNTHFLOW_API_KEY", "type": "ENV_VAR"} in resources[
        "synthflow"
    ]
    assert TEST_KEY not in repr(data)
    assert TEST_KEY not in webserver.process.log_tail(chars=1_000_000)
