"""Each workspace's health in the UI, and the alerts, as `dagster dev` users have them.

Contract: with the project's `dagster.yaml` in DAGSTER_HOME, a webserver and a daemon at the
project root, and `synthflow-numbers snapshot` run from the shell: a workspace that failed a
check shows failed in workspace_passes_checks, a workspace without a snapshot in the window
shows late (workspace_fresh failed) once the daemon ticks workspace_lateness, and the third
shows healthy in both, all read through the webserver's GraphQL. The webhook gets one message
for the failed check, one for the workspace that turned late and one for a failed run, each
naming its workspace by name, linking to the UI, never holding the key.
"""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
from dagster._core.scheduler.instigation import InstigatorType

from pipelines.synthflow.simulator import PhoneNumber, demo_simulator
from tests.conftest import TEST_KEY
from tests.dagster_ui import Webserver, webserver_at
from tests.pg import free_port
from tests.services import BIN, PROJECT_ROOT, clean_environment, service, wait_until

NAMES = ("Odd Numbers", "All Good", "Never Stored")
ALERT_SENSORS = ("snapshot_failure_alert", "failed_check_alert")
# The daemon's start and code location load, then the sensors' own intervals (30 s, 60 s).
DAEMON_TICK_S = 150
CHECK_STATUSES = """
{
  assetNodes(assetKeys: [{path: ["synthflow", "number_snapshots"]}]) {
    assetChecksOrError {
      ... on AssetChecks {
        checks {
          name
          partitionStatuses {
            ... on AssetCheckDefaultPartitionStatuses { succeededPartitions failedPartitions }
          }
        }
      }
    }
  }
}
"""


def partition_statuses(server: Webserver) -> dict[str, dict[str, set[str]]]:
    (node,) = server.graphql(CHECK_STATUSES)["assetNodes"]
    return {
        check["name"]: {
            status: set(keys) for status, keys in (check["partitionStatuses"] or {}).items()
        }
        for check in node["assetChecksOrError"]["checks"]
    }


def sensor_ticks(instance: dg.DagsterInstance, name: str) -> list:
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SENSOR):
        if state.instigator_name == name:
            return list(instance.get_ticks(state.instigator_origin_id, state.selector_id))
    return []


def test_a_failing_and_a_late_workspace_show_and_alert_on_their_own(tmp_path: Path, webhook):
    url, received = webhook
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    ui_port = free_port()
    with demo_simulator(seed=11, workspaces=3, numbers_per_workspace=10) as simulator:
        odd, good, late = simulator.workspace_ids()
        simulator.add_number(odd, PhoneNumber("7166663572", None, True))
        config = tmp_path / "synthflow.yaml"
        away = datetime.now(UTC) + timedelta(hours=12)
        config.write_text(
            "workspaces:\n"
            + "".join(
                f"  - id: {wid}\n    name: {name}\n"
                for wid, name in zip((odd, good, late), NAMES, strict=True)
            )
            + "fetch:\n  max_backoff_s: 0.02\n  max_retries: 1\n"
            # Daily, as by default, but half a day away: at its default time (06:00 UTC) the
            # daemon once ran it mid-test, and its new materializations were not yet checked.
            + f'schedule:\n  cron: "{away.minute} {away.hour} * * *"\n  timezone: UTC\n'
            + f"alerts:\n  webhook_url: {url}\n  dagster_url: http://127.0.0.1:{ui_port}\n"
        )
        env = clean_environment(
            {
                "DAGSTER_HOME": str(home),
                "SYNTHFLOW_BASE_URL": simulator.base_url,
                "SYNTHFLOW_API_KEY": TEST_KEY,
                "SYNTHFLOW_DUCKDB_PATH": str(tmp_path / "numbers.duckdb"),
                "SYNTHFLOW_CONFIG": str(config),
            }
        )

        def snapshot(*workspaces: str) -> int:
            command = [str(BIN / "synthflow-numbers"), "snapshot"]
            for workspace_id in workspaces:
                command += ["--workspace", workspace_id]
            return subprocess.run(
                command, cwd=PROJECT_ROOT, env=env, capture_output=True, timeout=300
            ).returncode

        def messages(count: int):
            return lambda: list(received) if len(received) >= count else None

        with (
            webserver_at(ui_port, env, tmp_path, [odd, good, late]) as server,
            service(
                "daemon",
                [str(BIN / "dagster-daemon"), "run", "-w", "workspace.yaml"],
                env,
                tmp_path,
            ) as daemon,
            dg.DagsterInstance.from_config(str(home)) as instance,
        ):
            # A run sensor announces the runs that end after its first tick.
            for name in ALERT_SENSORS:
                wait_until(
                    lambda name=name: sensor_ticks(instance, name) or None,
                    timeout_s=DAEMON_TICK_S,
                    what=f"the first tick of {name}",
                    services=(server.process, daemon),
                )
            assert snapshot(odd, good) == 0  # the odd number is stored as given, and checked
            checked, turned_late = sorted(
                wait_until(
                    messages(2),
                    timeout_s=DAEMON_TICK_S,
                    what="the failed check's and the late workspace's alerts",
                    services=(server.process, daemon),
                ),
                key=lambda message: "late" in message["text"],
            )
            simulator.break_workspace(late, "truncate")
            assert snapshot(late) != 0
            *_, failed = wait_until(
                messages(3),
                timeout_s=DAEMON_TICK_S,
                what="the failed run's alert",
                services=(server.process, daemon),
            )
            statuses = partition_statuses(server)

    assert "numbers_are_e164" in checked["text"] and "Odd Numbers" in checked["text"]
    assert "late" in turned_late["text"] and "Never Stored" in turned_late["text"]
    assert "failed" in failed["text"] and late in failed["text"]
    for message, others in (
        (checked, ("All Good", "Never Stored")),
        (turned_late, ("All Good", "Odd Numbers")),
        (failed, ("All Good", "Odd Numbers")),
    ):
        assert f"http://127.0.0.1:{ui_port}/" in message["text"]
        assert TEST_KEY not in message["text"]
        assert not any(other in message["text"] for other in others), message
    assert len(received) == 3
    assert statuses["workspace_passes_checks"]["failedPartitions"] == {odd}
    assert statuses["workspace_passes_checks"]["succeededPartitions"] == {good}
    assert statuses["workspace_fresh"]["failedPartitions"] == {late}
    assert statuses["workspace_fresh"]["succeededPartitions"] == {odd, good}
