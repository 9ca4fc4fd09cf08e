"""The schedule, run for real by `dagster-daemon` in the production layout.

Contract: with `deploy/dagster.yaml` (PostgreSQL) in DAGSTER_HOME, the code location served by
`dagster code-server start -m pipelines.definitions` and found through `deploy/workspace.yaml`,
`dagster-daemon run` ticks snapshot_schedule on its cron (here: every minute), queues one run
tagged with the schedule and covering every workspace partition, and launches it through the
code server. While another writer holds the one slot of the pool "duckdb", the daemon keeps
the run in the queue and nothing touches the DuckDB file; once the slot is free the run is
launched and succeeds: every configured workspace has its snapshot, taken by that run, and
its history in the DuckDB file.

The daemon only ticks for minute boundaries after it started, so the test waits for the next
one: about 30 s on average, at most 60 s.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._grpc.client import DagsterGrpcClient

from pipelines.defs.schedules import RANGE_END, RANGE_START
from pipelines.synthflow.simulator import Simulator
from tests import pg
from tests.conftest import TEST_KEY
from tests.pg import PostgresServer, free_port, requires_postgres
from tests.services import BIN, PROJECT_ROOT, Service, clean_environment, service, wait_until

postgres_server = pg.postgres_server  # the fixture, from the shared module
pytestmark = requires_postgres

SCHEDULE = "snapshot_schedule"
POOL = "duckdb"
OTHER_WRITER = "another-writer"  # a run ID that holds the pool's one slot
BLOCKED = "is blocked by global concurrency limits"  # the daemon's log line for a held run
DB_NAME = "dagster_daemon"
CODE_SERVER_READY_S = 120
# From the daemon's start: its own startup, up to 60 s to the next minute, one queue pass.
HELD_IN_QUEUE_S = 150
# From freeing the slot: one queue pass, starting the run worker and the step process, the run.
RUN_FINISHED_S = 150
FINISHED = {
    dg.DagsterRunStatus.SUCCESS,
    dg.DagsterRunStatus.FAILURE,
    dg.DagsterRunStatus.CANCELED,
}


def code_server_answers(port: int):
    client = DagsterGrpcClient(port=port, host="127.0.0.1")

    def probe() -> bool | None:
        try:
            client.ping("ready?")
        except Exception:
            return None
        return True

    return probe


def failed_schedule_tick(instance: dg.DagsterInstance) -> str | None:
    """The error of a failed tick of the schedule, so a broken schedule fails the test at once."""
    for state in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE):
        for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5):
            if tick.status == TickStatus.FAILURE:
                return str(tick.error)
    return None


def scheduled_runs(instance: dg.DagsterInstance, daemon: Service) -> list[dg.DagsterRun]:
    error = failed_schedule_tick(instance)
    if error:
        pytest.fail(f"{SCHEDULE} failed to tick: {error}\n{daemon.log_tail()}")
    runs = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/schedule_name": SCHEDULE}))
    return list(reversed(runs))  # oldest first


def run_held_in_the_queue(instance: dg.DagsterInstance, daemon: Service):
    def probe() -> dg.DagsterRun | None:
        log = daemon.log_tail(chars=1_000_000)
        for run in scheduled_runs(instance, daemon):
            if run.status not in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED):
                pytest.fail(
                    f"run {run.run_id} left the queue ({run.status}) while the pool was held"
                )
            if f"Run {run.run_id} {BLOCKED}" in log:
                return run
        return None

    return probe


def finished(instance: dg.DagsterInstance, run_id: str):
    def probe() -> dg.DagsterRun | None:
        run = instance.get_run_by_id(run_id)
        return run if run is not None and run.status in FINISHED else None

    return probe


def test_the_daemon_queues_the_scheduled_run_until_duckdb_is_free_then_stores_it(
    postgres_server: PostgresServer,
    simulator: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    config = tmp_path / "synthflow.yaml"
    config.write_text(
        "fetch:\n  max_backoff_s: 0.02\n  page_size: 25\n"
        'schedule:\n  cron: "* * * * *"\n  timezone: UTC\n'
    )
    duckdb_path = tmp_path / "numbers.duckdb"
    workspaces = simulator.workspace_ids()
    postgres_server.create_database(DB_NAME)
    port = free_port()
    env = clean_environment(
        {
            **postgres_server.dagster_env(DB_NAME),
            "DAGSTER_HOME": str(home),
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(port),
            "SYNTHFLOW_BASE_URL": simulator.base_url,
            "SYNTHFLOW_WORKSPACES": ",".join(workspaces),
            "SYNTHFLOW_API_KEY": TEST_KEY,
            "SYNTHFLOW_DUCKDB_PATH": str(duckdb_path),
            "SYNTHFLOW_CONFIG": str(config),
        }
    )
    for name, value in postgres_server.dagster_env(DB_NAME).items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        # Another writer holds the pool's one slot (its limit comes from deploy/dagster.yaml).
        storage = instance.event_log_storage
        storage.initialize_concurrency_limit_to_default(POOL)
        assert storage.claim_concurrency_slot(POOL, OTHER_WRITER, "write").is_claimed
        code_server_command = [
            str(BIN / "dagster"),
            *("code-server", "start", "-m", "pipelines.definitions"),
            *("--location-name", "synthflow_numbers"),
        ]
        with service("code-server", code_server_command, env, tmp_path) as code_server:
            # The daemon loads the workspace once at start (then every 60 s): serve it first.
            wait_until(
                code_server_answers(port),
                timeout_s=CODE_SERVER_READY_S,
                what="the code server to answer",
                services=(code_server,),
                interval_s=0.5,
            )
            daemon_command = [str(BIN / "dagster-daemon"), "run", "-w", "deploy/workspace.yaml"]
            with service("daemon", daemon_command, env, tmp_path) as daemon:
                waiting = wait_until(
                    run_held_in_the_queue(instance, daemon),
                    timeout_s=HELD_IN_QUEUE_S,
                    what=f"a run of {SCHEDULE} held in the queue by the pool {POOL}",
                    services=(code_server, daemon),
                )
                assert instance.get_run_by_id(waiting.run_id).status == dg.DagsterRunStatus.QUEUED
                assert not duckdb_path.exists()
                storage.free_concurrency_slots_for_run(OTHER_WRITER)
                run = wait_until(
                    finished(instance, waiting.run_id),
                    timeout_s=RUN_FINISHED_S,
                    what=f"run {waiting.run_id} of {SCHEDULE} to finish",
                    services=(code_server, daemon),
                )
        # Both stopped here: no later tick can hold the DuckDB file while it is read below.

        failures = [
            entry.message
            for entry in instance.all_logs(run.run_id)
            if entry.dagster_event and entry.dagster_event.is_failure
        ]
        assert run.status == dg.DagsterRunStatus.SUCCESS, failures
        assert run.tags[RANGE_START] == workspaces[0]
        assert run.tags[RANGE_END] == workspaces[-1]
        assert instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)

    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        snapshots = con.execute(
            "SELECT workspace_id, row_count FROM synthflow.snapshots WHERE run_id = ?",
            [run.run_id],
        ).fetchall()
        history = dict(
            con.execute(
                "SELECT workspace_id, count(*) FROM synthflow.number_history "
                "WHERE is_current GROUP BY workspace_id"
            ).fetchall()
        )
    expected = {ws: len(simulator.numbers(ws)) for ws in workspaces}
    assert dict(snapshots) == expected
    assert history == expected
