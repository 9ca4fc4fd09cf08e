"""What the Dagster UI shows, read through a real `dagster-webserver`'s GraphQL API.

Contract: `dagster-webserver -w workspace.yaml` at the project root loads the code location
and shows the three assets (number_snapshots with one partition per configured workspace,
number_history and number_changes as whole tables), each with a description, kinds and the
owning team; the six checks on the assets they verify, and per workspace
workspace_passes_checks and workspace_fresh; the schedule snapshot_schedule with the
cron and timezone from the config, running by default; and the API key only as the name of
its variable, never its value.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest

from pipelines.synthflow.simulator import demo_simulator
from tests.conftest import TEST_KEY
from tests.dagster_ui import LOCATION, Webserver, webserver_at
from tests.pg import free_port
from tests.services import PROJECT_ROOT, clean_environment

CRON = "30 5 * * 1-5"
TIMEZONE = "Europe/Berlin"
ASSETS = {
    "synthflow/number_snapshots": {
        "row_count_matches_total",
        "numbers_unique",
        "numbers_are_e164",
        "workspace_passes_checks",
        "workspace_fresh",
    },
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
RESOURCES = """
query Resources($selector: RepositorySelector!) {
  allTopLevelResourceDetailsOrError(repositorySelector: $selector) {
    ... on ResourceDetailsList { results { name configuredValues { key value type } } }
  }
}
"""


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
        with webserver_at(port, env, tmp, simulator.workspace_ids()) as server:
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
