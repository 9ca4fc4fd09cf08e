"""The Dagster definitions, materialized for real on a temporary instance.

Contract: one partition per configured workspace; one run covers them all; each stored
workspace is its own materialization with numeric metadata; checks run; a workspace that
fails stores nothing and fails the run by name while the others are stored; a re-executed
run stores each snapshot once.
"""

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import duckdb

from pipelines.config import Workspace, load_settings
from pipelines.config.values import REGION_BASE_URLS
from pipelines.definitions import SNAPSHOT_JOB, build_definitions
from pipelines.defs.assets import SNAPSHOTS_KEY, WORKSPACE_CHECK, _materialization
from pipelines.defs.history import CHANGES_KEY, HISTORY_KEY
from pipelines.defs.schedules import all_partitions_tags
from pipelines.snapshot import Progress, WorkspaceOutcome, snapshot_id_for
from pipelines.warehouse.connection import connect
from pipelines.warehouse.history import CHANGE_TYPES
from pipelines.warehouse.schema import columns
from pipelines.warehouse.store import SnapshotRow

NUMERIC_METADATA = ("numbers", "available", "assigned", "pages", "retries", "seconds")


def run_snapshot_job(
    instance: dg.DagsterInstance, progress: Progress | None = None
) -> dg.ExecuteInProcessResult:
    settings = load_settings()
    defs = build_definitions(settings, progress)
    partitions = dg.StaticPartitionsDefinition(settings.workspace_ids)
    return defs.resolve_job_def(SNAPSHOT_JOB).execute_in_process(
        instance=instance, tags=all_partitions_tags(partitions), raise_on_error=False
    )


def stored_listing(path: str, workspace_id: str) -> set[tuple]:
    with duckdb.connect(path, read_only=True) as con:
        return set(
            con.execute(
                "SELECT number, sid, is_available FROM synthflow.number_snapshots "
                "WHERE workspace_id = ?",
                [workspace_id],
            ).fetchall()
        )


def simulator_listing(simulator, workspace_id: str) -> set[tuple]:
    return {(n.number, n.sid, n.is_available) for n in simulator.numbers(workspace_id)}


def test_definitions_have_partitions_checks_and_schedule(synthflow_env, simulator):
    defs = build_definitions(load_settings())
    snapshots = defs.resolve_assets_def(SNAPSHOTS_KEY)
    assert snapshots.partitions_def.get_partition_keys() == simulator.workspace_ids()
    checks = {key.name for key in defs.resolve_asset_graph().asset_check_keys}
    assert {"row_count_matches_total", "numbers_unique", "numbers_are_e164"} <= checks
    assert {"no_overlapping_versions", "changes_match_versions"} <= checks
    schedule = defs.resolve_schedule_def("snapshot_schedule")
    assert schedule.cron_schedule == "0 6 * * *"
    assert schedule.job_name == SNAPSHOT_JOB
    spec = next(spec for spec in snapshots.specs if spec.key == SNAPSHOTS_KEY)
    assert spec.freshness_policy.fail_window.to_timedelta() == timedelta(days=2)
    for spec in snapshots.specs:
        assert spec.description and spec.owners and "duckdb" in spec.kinds
        assert "dagster/column_schema" in spec.metadata
    # Every step that opens the DuckDB file waits for the one slot of the pool, not for its lock.
    steps = [*defs.assets, *defs.asset_checks]
    assert {step.node_def.name: step.node_def.pool for step in steps} == {
        "synthflow_snapshot": "duckdb",
        "synthflow__number_snapshots_workspace_fresh": "duckdb",
    }


def test_the_memory_limit_reaches_every_connection_of_the_warehouse(synthflow_env):
    config = Path(synthflow_env["SYNTHFLOW_CONFIG"])
    config.write_text(f"{config.read_text()}database:\n  memory_limit: 300MB\n")
    warehouse = build_definitions(load_settings()).resources["warehouse"]

    with warehouse.connect() as con:
        (limit,) = con.execute("SELECT current_setting('memory_limit')").fetchone()

    assert limit == "286.1 MiB"  # 300 * 10**6 bytes, as DuckDB writes it


def test_each_asset_describes_its_columns_as_the_database_does(synthflow_env, simulator, tmp_path):
    """One description per column: the schema's COMMENT ON, read back for Dagster."""
    with connect(tmp_path / "described.duckdb") as con:
        described = dict(
            con.execute(
                "SELECT table_name || '.' || column_name, comment FROM duckdb_columns() "
                "WHERE schema_name = 'synthflow' ORDER BY table_name, column_index"
            ).fetchall()
        )
    snapshots = build_definitions(load_settings()).resolve_assets_def(SNAPSHOTS_KEY)
    for spec in snapshots.specs:
        table = spec.metadata["dagster/table_name"].removeprefix("synthflow.")
        columns = spec.metadata["dagster/column_schema"].columns
        assert [column.name for column in columns] == [
            name.split(".")[1] for name in described if name.startswith(f"{table}.")
        ]
        for column in columns:
            assert column.description and column.description == described[f"{table}.{column.name}"]


def test_one_run_stores_every_workspace_exactly(synthflow_env, simulator):
    with dg.instance_for_test() as instance:
        result = run_snapshot_job(instance)
        assert result.success
        for workspace_id in simulator.workspace_ids():
            assert stored_listing(synthflow_env["SYNTHFLOW_DUCKDB_PATH"], workspace_id) == (
                simulator_listing(simulator, workspace_id)
            )
        materialized = instance.get_materialized_partitions(SNAPSHOTS_KEY)
        assert materialized == set(simulator.workspace_ids())
        for whole_table in (HISTORY_KEY, CHANGES_KEY):  # once a run, not a partition each
            events = instance.fetch_materializations(whole_table, limit=10).records
            assert [event.partition_key for event in events] == [None]


def test_each_workspace_materialization_has_numeric_metadata(synthflow_env, simulator):
    with dg.instance_for_test() as instance:
        assert run_snapshot_job(instance).success
        first = simulator.workspace_ids()[0]
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=SNAPSHOTS_KEY, asset_partitions=[first]), limit=1
        ).records
        metadata = records[0].asset_materialization.metadata
        for name in NUMERIC_METADATA:
            assert isinstance(metadata[name], dg.IntMetadataValue | dg.FloatMetadataValue), name
        expected = simulator.numbers(first)
        assert metadata["numbers"].value == len(expected)
        assert metadata["available"].value == sum(n.is_available for n in expected)
        assert metadata["dagster/partition_row_count"].value == len(expected)
        every = sum(len(simulator.numbers(ws)) for ws in simulator.workspace_ids())
        assert metadata["dagster/row_count"].value == every  # the table's, all workspaces
        assert metadata["changes_added"].value == len(expected)
        assert metadata["base_url"].value == simulator.base_url


def latest_metadata(
    instance: dg.DagsterInstance, asset_key: dg.AssetKey, workspace_id: str | None = None
):
    partitions = [workspace_id] if workspace_id else None
    records = instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=asset_key, asset_partitions=partitions), limit=1
    ).records
    return records[0].asset_materialization.metadata


def recorded_changes(path: str, snapshot_id: str) -> dict[str, int]:
    with duckdb.connect(path, read_only=True) as con:
        return dict(
            con.execute(
                "SELECT change_type, count(*) FROM synthflow.number_changes "
                "WHERE snapshot_id = ? GROUP BY change_type",
                [snapshot_id],
            ).fetchall()
        )


def test_each_workspace_reports_its_own_changes_and_history_the_tables(synthflow_env, simulator):
    """Several workspaces of different sizes and changes in one run: each snapshot partition gets
    its own change counts; history and changes report the whole tables and the run's sums."""
    workspace_ids = simulator.workspace_ids()
    removed = {workspace_id: 2 * i for i, workspace_id in enumerate(workspace_ids)}
    released = {workspace_id: i + 1 for i, workspace_id in enumerate(workspace_ids)}
    for workspace_id in workspace_ids:
        for record in simulator.numbers(workspace_id)[: removed[workspace_id]]:
            simulator.remove_number(workspace_id, record.number)
    with dg.instance_for_test() as instance:
        assert run_snapshot_job(instance).success
        for workspace_id in workspace_ids:
            assigned = [n for n in simulator.numbers(workspace_id) if not n.is_available]
            for record in assigned[: released[workspace_id]]:
                simulator.set_available(workspace_id, record.number, True)
        second = run_snapshot_job(instance)
        assert second.success
        snapshots = {ws: latest_metadata(instance, SNAPSHOTS_KEY, ws) for ws in workspace_ids}
        history = latest_metadata(instance, HISTORY_KEY)
        changes = latest_metadata(instance, CHANGES_KEY)
    path = synthflow_env["SYNTHFLOW_DUCKDB_PATH"]
    for workspace_id, metadata in snapshots.items():
        in_run = recorded_changes(path, snapshot_id_for(workspace_id, second.run_id))
        assert in_run == {"released": released[workspace_id]}
        for kind in CHANGE_TYPES:
            assert metadata[f"changes_{kind}"].value == in_run.get(kind, 0)
    numbers = sum(60 - removed[ws] for ws in workspace_ids)
    # Each release closes a version and opens another; each is one change row.
    versions = numbers + sum(released.values())
    assert history["current_numbers"].value == numbers
    assert history["versions"].value == history["dagster/row_count"].value == versions
    assert history["workspaces_in_run"].value == len(workspace_ids)
    assert changes["dagster/row_count"].value == versions
    for kind in CHANGE_TYPES:
        run_total = sum(released.values()) if kind == "released" else 0
        assert history[f"changes_{kind}"].value == changes[kind].value == run_total
    assert changes["changes_in_run"].value == sum(released.values())


def test_checks_pass_on_exact_snapshots_for_the_run_and_each_workspace(synthflow_env, simulator):
    with dg.instance_for_test() as instance:
        result = run_snapshot_job(instance)
        evaluations = result.get_asset_check_evaluations()
        run_wide = [evaluation for evaluation in evaluations if evaluation.partition is None]
        verdicts = {evaluation.partition: evaluation for evaluation in evaluations}
        verdicts.pop(None)
        assert len(run_wide) == 6 and all(evaluation.passed for evaluation in run_wide)
        assert set(verdicts) == set(simulator.workspace_ids())
        for workspace_id, verdict in verdicts.items():
            assert verdict.passed and verdict.check_name == WORKSPACE_CHECK
            assert verdict.metadata["failing_checks"].value == "none"
            assert "examples" not in verdict.metadata
            # The UI shows a verdict only on the materialization it names: this run's.
            (newest,) = instance.fetch_materializations(
                dg.AssetRecordsFilter(SNAPSHOTS_KEY, [workspace_id]), limit=1
            ).records
            assert verdict.target_materialization_data.storage_id == newest.storage_id
            assert newest.run_id == result.run_id


def test_a_failing_workspace_fails_alone_and_by_name(synthflow_env, simulator):
    healthy_a, broken, healthy_b = simulator.workspace_ids()
    simulator.break_workspace(broken, "503")
    with dg.instance_for_test() as instance:
        result = run_snapshot_job(instance)
        assert not result.success
        failure = next(event for event in result.all_events if event.is_step_failure)
        assert broken in failure.step_failure_data.error.message
        assert healthy_a not in failure.step_failure_data.error.message
        path = synthflow_env["SYNTHFLOW_DUCKDB_PATH"]
        assert stored_listing(path, broken) == set()
        for workspace_id in (healthy_a, healthy_b):
            assert stored_listing(path, workspace_id) == simulator_listing(simulator, workspace_id)
        assert instance.get_materialized_partitions(SNAPSHOTS_KEY) == {healthy_a, healthy_b}


def test_the_same_run_stored_twice_keeps_one_snapshot(synthflow_env, simulator):
    """A retried step reuses the run's snapshot ids, so it replaces instead of adding."""
    from pipelines.snapshot import take_snapshots
    from pipelines.warehouse.connection import connect

    settings = load_settings()
    for _ in range(2):
        take_snapshots(
            list(settings.workspaces),
            api_key=Workspace.api_key,
            fetch=settings.fetch,
            connect=lambda: connect(settings.duckdb_path),
            run_id="run-1",
        )
    with duckdb.connect(str(settings.duckdb_path), read_only=True) as con:
        snapshots = con.execute("SELECT count(*) FROM synthflow.snapshots").fetchone()[0]
        added = con.execute(
            "SELECT count(*) FROM synthflow.number_changes WHERE change_type = 'added'"
        ).fetchone()[0]
    assert snapshots == len(simulator.workspace_ids())
    assert added == sum(len(simulator.numbers(w)) for w in simulator.workspace_ids())


def snapshot_job_from_environment() -> dg.JobDefinition:
    """The project's job, loadable again by a re-execution in another process."""
    return build_definitions(load_settings()).resolve_job_def(SNAPSHOT_JOB)


def test_a_re_executed_run_stores_each_snapshot_once(synthflow_env, simulator):
    with dg.instance_for_test() as instance:
        first = run_snapshot_job(instance)
        assert first.success
        options = dg.ReexecutionOptions(parent_run_id=first.run_id)
        job = dg.reconstructable(snapshot_job_from_environment)
        # As the UI does, the re-execution keeps the parent's partition-range tags.
        tags = {k: v for k, v in first.dagster_run.tags.items() if "partition_range" in k}
        with dg.execute_job(job, instance, tags=tags, reexecution_options=options) as again:
            assert again.success
            assert again.dagster_run.root_run_id == first.run_id
    path = synthflow_env["SYNTHFLOW_DUCKDB_PATH"]
    with duckdb.connect(path, read_only=True) as con:
        snapshots = con.execute("SELECT count(*) FROM synthflow.snapshots").fetchone()[0]
        added = con.execute(
            "SELECT count(*) FROM synthflow.number_changes WHERE change_type = 'added'"
        ).fetchone()[0]
    assert snapshots == len(simulator.workspace_ids())
    assert added == sum(len(simulator.numbers(w)) for w in simulator.workspace_ids())


def test_the_history_tables_name_the_snapshot_columns_each_column_comes_from(
    synthflow_env, simulator
):
    with dg.instance_for_test() as instance:
        assert run_snapshot_job(instance).success
        lineages = {key: latest_metadata(instance, key) for key in (HISTORY_KEY, CHANGES_KEY)}
    snapshot_columns = {name for name, _, _ in columns("number_snapshots")}
    for key, metadata in lineages.items():
        lineage = metadata["dagster/column_lineage"].value.deps_by_column
        assert set(lineage) == {name for name, _, _ in columns(key.path[-1])}, key
        for deps in lineage.values():
            assert deps and {dep.asset_key for dep in deps} == {SNAPSHOTS_KEY}
            assert {dep.column_name for dep in deps} <= snapshot_columns


def test_a_workspace_materialization_names_its_region_when_one_is_configured():
    taken_at = datetime(2026, 12, 6, 6, tzinfo=UTC)
    row = SnapshotRow("w1/run", "w1", taken_at, 2, 2, 1, "run")
    regional = WorkspaceOutcome(Workspace(id="w1", name="EU", region="eu"), row, available=1)
    metadata = _materialization(regional, table_rows=2).metadata
    assert metadata["region"].value == "eu"
    assert metadata["base_url"].value == REGION_BASE_URLS["eu"]
    assert metadata["workspace_name"].value == "EU"
    unset = WorkspaceOutcome(Workspace(id="w1"), row, available=1)
    assert "region" not in _materialization(unset, table_rows=2).metadata
