"""The production instance configuration, `deploy/dagster.yaml`, on a real PostgreSQL server.

Contract: with `deploy/dagster.yaml` in DAGSTER_HOME and the DAGSTER_PG_* variables set, the
instance keeps runs, event logs and schedule ticks in PostgreSQL, queues runs
(QueuedRunCoordinator), admits one step of the pool "duckdb" at a time across all runs and
frees a slot that a stuck or dead run held; without those variables it is refused by name.
The snapshot job run on that instance succeeds; its run and its materializations are in
PostgreSQL, seen through Dagster and through plain SQL; its snapshots are in the DuckDB file,
one per workspace, taken by that run.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.run_coordinator import QueuedRunCoordinator
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage

from pipelines.config import load_settings
from pipelines.definitions import SNAPSHOT_JOB, build_definitions
from pipelines.defs.assets import SNAPSHOTS_KEY
from pipelines.defs.history import CHANGES_KEY, HISTORY_KEY
from pipelines.defs.schedules import all_partitions_tags
from pipelines.synthflow.simulator import Simulator, demo_simulator
from tests import pg
from tests.conftest import TEST_KEY
from tests.pg import PostgresServer, requires_postgres

postgres_server = pg.postgres_server  # the fixture, from the shared module
pytestmark = requires_postgres

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
DB_NAME = "dagster_deployment"
POOL = "duckdb"


@dataclass(frozen=True)
class Deployment:
    """One snapshot run on the production instance, kept for the assertions below."""

    instance: dg.DagsterInstance
    result: dg.ExecuteInProcessResult
    simulator: Simulator
    server: PostgresServer
    duckdb_path: Path


def production_home(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    shutil.copy(DEPLOY / "dagster.yaml", path / "dagster.yaml")
    return path


@pytest.fixture(scope="module")
def deployment(
    postgres_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    tmp = tmp_path_factory.mktemp("deployment")
    home = production_home(tmp / "dagster_home")
    config = tmp / "synthflow.yaml"
    config.write_text("fetch:\n  max_backoff_s: 0.02\n  page_size: 25\n")
    duckdb_path = tmp / "numbers.duckdb"
    postgres_server.create_database(DB_NAME)
    with (
        demo_simulator(seed=5, workspaces=3, numbers_per_workspace=40) as simulator,
        pytest.MonkeyPatch.context() as env,
    ):
        for name, value in {
            **postgres_server.dagster_env(DB_NAME),
            "DAGSTER_HOME": str(home),
            "SYNTHFLOW_BASE_URL": simulator.base_url,
            "SYNTHFLOW_WORKSPACES": ",".join(simulator.workspace_ids()),
            "SYNTHFLOW_API_KEY": TEST_KEY,
            "SYNTHFLOW_DUCKDB_PATH": str(duckdb_path),
            "SYNTHFLOW_CONFIG": str(config),
        }.items():
            env.setenv(name, value)
        with dg.DagsterInstance.get() as instance:
            settings = load_settings()
            partitions = dg.StaticPartitionsDefinition(settings.workspace_ids)
            result = (
                build_definitions(settings)
                .resolve_job_def(SNAPSHOT_JOB)
                .execute_in_process(
                    instance=instance, tags=all_partitions_tags(partitions), raise_on_error=False
                )
            )
            yield Deployment(instance, result, simulator, postgres_server, duckdb_path)


def query(server: PostgresServer, sql: str, *params: object) -> list[tuple]:
    con = server.connect(DB_NAME)
    try:
        with con.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall()
    finally:
        con.close()


def test_storage_is_postgres(deployment: Deployment):
    instance = deployment.instance
    assert isinstance(instance.run_storage, PostgresRunStorage)
    assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
    assert isinstance(instance.schedule_storage, PostgresScheduleStorage)


def test_runs_are_queued_for_the_daemon(deployment: Deployment):
    instance = deployment.instance
    assert isinstance(instance.run_coordinator, QueuedRunCoordinator)
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs >= 1


def test_a_stuck_or_dead_run_cannot_hold_the_duckdb_slot_for_ever(deployment: Deployment):
    instance = deployment.instance
    assert instance.run_monitoring_enabled
    assert instance.run_monitoring_max_runtime_seconds > 0
    assert instance.run_monitoring_settings["free_slots_after_run_end_seconds"] > 0


def test_the_snapshot_run_succeeds(deployment: Deployment):
    failures = [event.message for event in deployment.result.all_events if event.is_failure]
    assert deployment.result.success, failures


def test_the_run_is_stored_in_postgres(deployment: Deployment):
    run_id = deployment.result.run_id
    stored = deployment.instance.get_run_by_id(run_id)
    assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS
    rows = query(deployment.server, "SELECT status FROM runs WHERE run_id = %s", run_id)
    assert rows == [("SUCCESS",)]


def test_every_workspace_materialization_is_stored_in_postgres(deployment: Deployment):
    workspaces = set(deployment.simulator.workspace_ids())
    assert deployment.instance.get_materialized_partitions(SNAPSHOTS_KEY) == workspaces
    rows = query(
        deployment.server,
        "SELECT asset_key, partition FROM event_logs "
        "WHERE run_id = %s AND dagster_event_type = 'ASSET_MATERIALIZATION'",
        deployment.result.run_id,
    )
    whole_tables = [(key.to_string(), None) for key in (HISTORY_KEY, CHANGES_KEY)]
    per_workspace = [(SNAPSHOTS_KEY.to_string(), ws) for ws in workspaces]
    assert sorted(rows, key=str) == sorted(per_workspace + whole_tables, key=str)


def test_check_results_are_stored_and_pass(deployment: Deployment):
    rows = query(
        deployment.server,
        "SELECT count(*) FROM event_logs "
        "WHERE run_id = %s AND dagster_event_type = 'ASSET_CHECK_EVALUATION'",
        deployment.result.run_id,
    )
    evaluations = deployment.result.get_asset_check_evaluations()
    assert rows == [(len(evaluations),)]
    # The six over the run, and each workspace's verdict over them.
    assert len(evaluations) == 6 + len(deployment.simulator.workspace_ids())
    assert all(evaluation.passed for evaluation in evaluations)


def test_duckdb_holds_one_snapshot_per_workspace_from_the_run(deployment: Deployment):
    with duckdb.connect(str(deployment.duckdb_path), read_only=True) as con:
        snapshots = con.execute(
            "SELECT workspace_id, run_id, row_count FROM synthflow.snapshots"
        ).fetchall()
        numbers = dict(
            con.execute(
                "SELECT workspace_id, count(*) FROM synthflow.number_history "
                "WHERE is_current GROUP BY workspace_id"
            ).fetchall()
        )
    simulator = deployment.simulator
    assert sorted(snapshots) == sorted(
        (ws, deployment.result.run_id, len(simulator.numbers(ws)))
        for ws in simulator.workspace_ids()
    )
    assert numbers == {ws: len(simulator.numbers(ws)) for ws in simulator.workspace_ids()}


def test_the_duckdb_pool_admits_one_step_at_a_time(deployment: Deployment):
    """The run's step claimed a slot of pool "duckdb", whose limit (1) is kept in PostgreSQL.

    Two other runs then compete for it: the first gets the slot, the second waits.
    """
    storage = deployment.instance.event_log_storage
    assert deployment.instance.get_concurrency_config().pool_config.default_pool_limit == 1
    limits = {pool.name: pool.limit for pool in storage.get_pool_limits()}
    assert limits[POOL] == 1
    assert query(
        deployment.server,
        'SELECT "limit", using_default_limit FROM concurrency_limits WHERE concurrency_key = %s',
        POOL,
    ) == [(1, True)]
    assert storage.get_concurrency_info(POOL).active_slot_count == 0  # the run let go of it

    first = storage.claim_concurrency_slot(POOL, "run-a", "synthflow_snapshot")
    second = storage.claim_concurrency_slot(POOL, "run-b", "synthflow_snapshot")
    try:
        assert first.is_claimed
        assert not second.is_claimed
    finally:
        storage.free_concurrency_slots_for_run("run-a")
        storage.free_concurrency_slots_for_run("run-b")


def test_the_instance_refuses_to_load_without_its_postgres_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    home = production_home(tmp_path / "dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for name in ("DAGSTER_PG_USERNAME", "DAGSTER_PG_HOST", "DAGSTER_PG_DB", "DAGSTER_PG_PORT"):
        monkeypatch.setenv(name, "set")
    monkeypatch.delenv("DAGSTER_PG_PASSWORD", raising=False)
    with pytest.raises(dg.DagsterInvalidConfigError, match="DAGSTER_PG_PASSWORD"):
        dg.DagsterInstance.get()
