"""The schedule, run for real by `dagster-daemon` in the production layout.

Contract: with `deploy/dagster.yaml` (PostgreSQL) in DAGSTER_HOME, the code location served by
`dagster code-server start -m pipelines.definitions` and found through `deploy/workspace.yaml`,
`dagster-daemon run` ticks snapshot_schedule on its cron (here: every minute), queues one run
tagged with the schedule and covering every workspace partition, and launches it through the
code server. While another writer holds the one slot of the pool "duckdb", the daemon keeps
the run in the queue and nothing touches the DuckDB file; once the slot is free the run is
launched and succeeds: every configured workspace has its snapshot, taken by that run, and
its history in the DuckDB file.

A run whose worker is killed (SIGKILL, as the OOM killer or a lost node ends it) is marked
failed (by the sensor release_dead_runs or the daemon's run monitoring) and retried once by the
daemon; the retry, which starts with its parent's tags, is not taken for the dead run and
stores every workspace.

The daemon only ticks for minute boundaries after it started, so each test waits for the next
one: about 30 s on average, at most 60 s.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import duckdb
import pytest
from dagster._core.scheduler.instigation import InstigatorType, TickStatus
from dagster._grpc.client import DagsterGrpcClient

from pipelines.defs.dead_runs import PROCESS_TAG
from pipelines.defs.schedules import RANGE_END, RANGE_START
from pipelines.synthflow.simulator import Simulator, demo_simulator
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
CODE_SERVER_READY_S = 120
# From the daemon's start: its own startup, up to 60 s to the next minute, one queue pass.
HELD_IN_QUEUE_S = 150
# From freeing the slot: one queue pass, starting the run worker, the run.
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


@dataclass
class Deployment:
    instance: dg.DagsterInstance
    code_server: Service
    daemon: Service
    duckdb_path: Path

    @property
    def services(self) -> tuple[Service, ...]:
        return (self.code_server, self.daemon)

    def stop(self) -> None:
        """Stop the daemon and the code server: no later tick writes the DuckDB file."""
        self.daemon.stop()
        self.code_server.stop()


@contextlib.contextmanager
def deployment(
    postgres_server: PostgresServer,
    simulator: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    *,
    pool_held: bool,
) -> Iterator[Deployment]:
    """The production layout (deploy/dagster.yaml on PostgreSQL, a code server, the daemon)
    with the schedule ticking every minute, pointed at the simulator; with `pool_held`,
    another writer holds the pool's one slot from before the daemon starts. The daemon and the
    code server are stopped when the block ends, so nothing writes the DuckDB file after it."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "deploy" / "dagster.yaml", home / "dagster.yaml")
    config = tmp_path / "synthflow.yaml"
    config.write_text(
        "fetch:\n  max_backoff_s: 0.02\n  page_size: 25\n"
        'schedule:\n  cron: "* * * * *"\n  timezone: UTC\n'
    )
    duckdb_path = tmp_path / "numbers.duckdb"
    db_name = postgres_server.create_database(f"dagster_{tmp_path.name.lower()}")  # one a test
    port = free_port()
    env = clean_environment(
        {
            **postgres_server.dagster_env(db_name),
            "DAGSTER_HOME": str(home),
            "DAGSTER_CODE_SERVER_HOST": "127.0.0.1",
            "DAGSTER_CODE_SERVER_PORT": str(port),
            "SYNTHFLOW_BASE_URL": simulator.base_url,
            "SYNTHFLOW_WORKSPACES": ",".join(simulator.workspace_ids()),
            "SYNTHFLOW_API_KEY": TEST_KEY,
            "SYNTHFLOW_DUCKDB_PATH": str(duckdb_path),
            "SYNTHFLOW_CONFIG": str(config),
        }
    )
    for name, value in postgres_server.dagster_env(db_name).items():
        monkeypatch.setenv(name, value)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        if pool_held:  # the pool's limit comes from deploy/dagster.yaml
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
                yield Deployment(instance, code_server, daemon, duckdb_path)


def failures_of(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    return [
        entry.message
        for entry in instance.all_logs(run.run_id)
        if entry.dagster_event and entry.dagster_event.is_failure
    ]


def stored_by(duckdb_path: Path, root_run_id: str) -> dict[str, int]:
    """Each workspace's numbers in the snapshot the run (or its retries) stored."""
    with duckdb.connect(str(duckdb_path), read_only=True) as con:
        return dict(
            con.execute(
                "SELECT workspace_id, row_count FROM synthflow.snapshots "
                "WHERE snapshot_id = workspace_id || '/' || ?",
                [root_run_id],
            ).fetchall()
        )


def test_the_daemon_queues_the_scheduled_run_until_duckdb_is_free_then_stores_it(
    postgres_server: PostgresServer,
    simulator: Simulator,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
):
    workspaces = simulator.workspace_ids()
    with deployment(postgres_server, simulator, tmp_path, monkeypatch, pool_held=True) as live:
        instance = live.instance
        waiting = wait_until(
            run_held_in_the_queue(instance, live.daemon),
            timeout_s=HELD_IN_QUEUE_S,
            what=f"a run of {SCHEDULE} held in the queue by the pool {POOL}",
            services=live.services,
        )
        assert instance.get_run_by_id(waiting.run_id).status == dg.DagsterRunStatus.QUEUED
        assert not live.duckdb_path.exists()
        instance.event_log_storage.free_concurrency_slots_for_run(OTHER_WRITER)
        run = wait_until(
            finished(instance, waiting.run_id),
            timeout_s=RUN_FINISHED_S,
            what=f"run {waiting.run_id} of {SCHEDULE} to finish",
            services=live.services,
        )
        live.stop()
        assert run.status == dg.DagsterRunStatus.SUCCESS, failures_of(instance, run)
        assert run.tags[RANGE_START] == workspaces[0]
        assert run.tags[RANGE_END] == workspaces[-1]
        assert instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_ENQUEUED)
        # The process the tag names is the one that ends the run: were it a step's own process,
        # release_dead_runs would fail the run between that step's end and the run's.
        [ended] = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
        assert run.tags[PROCESS_TAG].split("/")[2] == str(ended.dagster_event.pid)

    with duckdb.connect(str(live.duckdb_path), read_only=True) as con:
        history = dict(
            con.execute(
                "SELECT workspace_id, count(*) FROM synthflow.number_history "
                "WHERE is_current GROUP BY workspace_id"
            ).fetchall()
        )
    expected = {ws: len(simulator.numbers(ws)) for ws in workspaces}
    assert stored_by(live.duckdb_path, run.run_id) == expected
    assert history == expected


def reading_with_its_own_tag(instance: dg.DagsterInstance, daemon: Service):
    """A scheduled run whose step has recorded its own process: it is reading listings."""

    def probe() -> dg.DagsterRun | None:
        for run in scheduled_runs(instance, daemon):
            if run.tags.get(PROCESS_TAG, "").startswith(f"{run.run_id}/"):
                return run
        return None

    return probe


def retry_of(instance: dg.DagsterInstance, run_id: str):
    """The finished retry of the run, once there is one."""

    def probe() -> dg.DagsterRun | None:
        retries = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
        return next((run for run in retries if run.status in FINISHED), None)

    return probe


@contextlib.contextmanager
def a_run_reading(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[Simulator, Deployment, dg.DagsterRun]]:
    """The deployment, once a scheduled run is reading listings; its pages are slow, so it is
    still reading when the test acts on it."""
    slow = dict(workspaces=3, numbers_per_workspace=150, page_size_cap=25, latency_s=1.0)
    with (
        demo_simulator(seed=9, **slow) as simulator,
        deployment(postgres_server, simulator, tmp_path, monkeypatch, pool_held=False) as live,
    ):
        reading = wait_until(
            reading_with_its_own_tag(live.instance, live.daemon),
            timeout_s=HELD_IN_QUEUE_S,
            what=f"a run of {SCHEDULE} reading listings",
            services=live.services,
            interval_s=0.2,
        )
        yield simulator, live, reading


def test_a_run_whose_worker_is_killed_is_failed_and_retried_once_into_a_whole_snapshot(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with a_run_reading(postgres_server, tmp_path, monkeypatch) as (simulator, live, killed):
        instance = live.instance
        # The run worker, which runs the step, as an OOM kill ends it.
        os.kill(int(killed.tags[PROCESS_TAG].split("/")[2]), signal.SIGKILL)
        retry = wait_until(
            retry_of(instance, killed.run_id),
            timeout_s=RUN_FINISHED_S,
            what=f"the retry of run {killed.run_id}, whose worker was killed, to finish",
            services=live.services,
        )
        live.stop()
        killed = instance.get_run_by_id(killed.run_id)
        assert killed.status == dg.DagsterRunStatus.FAILURE
        assert retry.status == dg.DagsterRunStatus.SUCCESS, failures_of(instance, retry)
        retries = instance.get_runs(dg.RunsFilter(tags={"dagster/root_run_id": killed.run_id}))
        assert [run.run_id for run in retries] == [retry.run_id]  # once
    expected = {ws: len(simulator.numbers(ws)) for ws in simulator.workspace_ids()}
    assert stored_by(live.duckdb_path, killed.run_id) == expected


def test_a_run_terminated_from_the_ui_ends_canceled_storing_nothing_and_frees_the_pool(
    postgres_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    with a_run_reading(postgres_server, tmp_path, monkeypatch) as (_, live, reading):
        instance = live.instance
        assert instance.run_coordinator.cancel_run(reading.run_id)  # what the UI's button does
        run = wait_until(
            finished(instance, reading.run_id),
            timeout_s=RUN_FINISHED_S,
            what=f"run {reading.run_id}, terminated, to end",
            services=live.services,
        )
        live.stop()
        assert run.status == dg.DagsterRunStatus.CANCELED, failures_of(instance, run)
        assert instance.event_log_storage.get_concurrency_run_ids() == set()
    assert stored_by(live.duckdb_path, run.run_id) == {}
