"""A DuckLake warehouse, its catalog on a real PostgreSQL server, its data in a folder: every
command works on it as on the file, and the history it keeps is the one a rebuild gives.

These run where the `ducklake` extra is installed (scripts/test runs them in .venv-ducklake,
DuckDB 1.5.5 with the extension packages) and PostgreSQL's server programs are; elsewhere they
are skipped with the reason. Without the extra, a DuckLake is refused: tests/test_bad_paths.py.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest

from pipelines.config import DuckLake
from pipelines.defs.history import SNAPSHOTS_KEY
from pipelines.synthflow.simulator import Simulator, demo_simulator
from pipelines.warehouse.connection import connect
from pipelines.warehouse.history import apply_snapshot, apply_snapshots
from tests.conftest import TEST_KEY, new_lake
from tests.history_cases import at, change_rows, history_rows, one_at_a_time, store_snapshot
from tests.pg import PostgresServer, requires_postgres
from tests.services import BIN, PROJECT_ROOT, wait_until
from tests.test_alerts import run_job, tick_lateness
from tests.test_cli import run_cli
from tests.test_crash_safety import (
    cli_env,
    crash_simulator,
    kill_at,
    kill_point,
    run_snapshot,
    runs_left_behind,
    start_snapshot,
)

requires_ducklake = pytest.mark.skipif(
    importlib.util.find_spec("duckdb_extensions") is None,
    reason="needs the ducklake extra: scripts/test runs these in .venv-ducklake "
    "(uv sync --extra ducklake)",
)
pytestmark = [requires_ducklake, requires_postgres]

HISTORY = "SELECT * FROM synthflow.number_history ORDER BY ALL"
CHANGES = "SELECT * FROM synthflow.number_changes ORDER BY ALL"


@pytest.fixture
def lake(
    lake_catalog_server: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> DuckLake:
    return new_lake(lake_catalog_server, tmp_path, monkeypatch)


def lake_env(lake: DuckLake, sim: Simulator, tmp_path: Path) -> dict[str, str]:
    config = tmp_path / "synthflow.yaml"
    config.write_text("fetch:\n  max_backoff_s: 0.02\n  page_size: 25\n")
    return {
        "SYNTHFLOW_DUCKLAKE_CATALOG": lake.catalog,
        "SYNTHFLOW_DUCKLAKE_DATA_PATH": lake.data_path,
        "SYNTHFLOW_DUCKDB_PATH": "",
        "SYNTHFLOW_BASE_URL": sim.base_url,
        "SYNTHFLOW_WORKSPACES": ",".join(sim.workspace_ids()),
        "SYNTHFLOW_API_KEY": TEST_KEY,
        "SYNTHFLOW_CONFIG": str(config),
    }


def test_every_command_works_on_a_ducklake_and_its_history_is_a_rebuilds(
    lake: DuckLake, simulator: Simulator, tmp_path: Path
) -> None:
    env = lake_env(lake, simulator, tmp_path)
    first, second, third = simulator.workspace_ids()
    assert run_cli("snapshot", env=env).returncode == 0
    added = simulator.new_number("DE")
    simulator.add_number(first, added)
    gone = simulator.numbers(second)[0].number
    simulator.remove_number(second, gone)
    freed = next(n.number for n in simulator.numbers(third) if not n.is_available)
    simulator.set_available(third, freed, True)

    done = run_cli("snapshot", env=env)

    assert done.returncode == 0, done.stderr
    with connect(lake, read_only=True) as con:
        per_workspace = con.execute(
            "SELECT workspace_id, count(*) FROM synthflow.snapshots GROUP BY 1"
        ).fetchall()
        assert sorted(count for _, count in per_workspace) == [2, 2, 2]
        changes = con.execute(
            "SELECT workspace_id, number, change_type FROM synthflow.number_changes "
            "WHERE previous_taken_at IS NOT NULL ORDER BY ALL"
        ).fetchall()
        assert changes == sorted(
            [(first, added.number, "added"), (second, gone, "removed"), (third, freed, "released")]
        )
        history, all_changes = con.execute(HISTORY).fetchall(), con.execute(CHANGES).fetchall()

    assert run_cli("rebuild-history", env=env).returncode == 0
    assert run_cli("maintain", env=env).returncode == 0
    with connect(lake, read_only=True) as con:
        assert con.execute(HISTORY).fetchall() == history
        assert con.execute(CHANGES).fetchall() == all_changes

    report = run_cli("report", env=env)
    assert report.returncode == 0 and first in report.stdout, report.stderr
    query = run_cli(
        "query", "--json", "SELECT count(*) AS n FROM synthflow.current_numbers", env=env
    )
    assert query.returncode == 0 and '"n": 180' in query.stdout, query.stdout + query.stderr
    exported = run_cli("export", str(tmp_path / "out"), env=env)
    assert exported.returncode == 0, exported.stderr
    assert pq.read_table(tmp_path / "out" / "number_history").num_rows == len(history)


def test_a_wrong_password_ends_in_one_line_naming_the_fix_and_never_the_password(
    lake: DuckLake, simulator: Simulator, tmp_path: Path
) -> None:
    env = lake_env(lake, simulator, tmp_path) | {"PGPASSWORD": "wrong-made-up-password"}

    done = run_cli("snapshot", env=env)

    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert "DuckLake" in line and "PGPASSWORD" in line
    assert "wrong-made-up-password" not in done.stdout + done.stderr


def test_an_analyst_reads_the_lake_while_a_run_writes_it(lake: DuckLake, tmp_path: Path) -> None:
    """On the file, this reader would wait for the run (or fail after lock_timeout_s)."""
    with demo_simulator(seed=5, workspaces=2, numbers_per_workspace=30, slow_s=15) as sim:
        env = lake_env(lake, sim, tmp_path)
        assert run_cli("snapshot", env=env).returncode == 0
        sim.fail_next("slow")  # the next run holds its connection while a page takes 15 s
        writer = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "snapshot"],
            env={**os.environ, **env},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            sim.reset_stats()
            wait_until(
                lambda: sim.stats.requests or None,
                timeout_s=60,
                what="the run's first request",
                interval_s=0.1,
            )

            read = run_cli("query", "--csv", "SELECT count(*) FROM synthflow.snapshots", env=env)

            assert writer.poll() is None, "the run ended before the reader could overlap it"
            # The first run's two, and the other workspace's new one once it is committed.
            assert read.returncode == 0 and read.stdout.split()[1:] in (["2"], ["3"]), read.stderr
        finally:
            _, errors = writer.communicate(timeout=120)
        assert writer.returncode == 0, errors


WHOLE = """
SELECT count(*) FROM synthflow.snapshots AS s
WHERE row_count <> total_records
   OR row_count <> (SELECT count(*) FROM synthflow.number_snapshots AS n
                    WHERE n.snapshot_id = s.snapshot_id)
"""


def test_four_runs_writing_at_once_and_a_reader_throughout_lose_nothing(
    lake: DuckLake, tmp_path: Path
) -> None:
    """Four processes, a workspace each, on an empty lake (each creating the schema), then
    again with every workspace changed (each changing history, so their commits conflict and
    are retried), while an analyst queries without pause."""
    with demo_simulator(seed=9, workspaces=4, numbers_per_workspace=300, latency_s=0.02) as sim:
        env = lake_env(lake, sim, tmp_path)
        flipped = {}
        reads: dict[int, list[subprocess.CompletedProcess]] = {1: [], 2: []}
        for round_number in (1, 2):
            writers = [
                subprocess.Popen(
                    [sys.executable, "-m", "pipelines.cli", "snapshot"],
                    env={**os.environ, **env, "SYNTHFLOW_WORKSPACES": workspace_id},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                )
                for workspace_id in sim.workspace_ids()
            ]
            while any(writer.poll() is None for writer in writers):
                reads[round_number].append(run_cli("query", "--csv", WHOLE, env=env))
            for writer in writers:
                assert writer.wait() == 0, writer.stderr.read()
            if round_number == 1:
                for workspace_id in sim.workspace_ids():
                    number = sim.numbers(workspace_id)[0]
                    sim.set_available(workspace_id, number.number, not number.is_available)
                    flipped[workspace_id] = number.number

    # Read before the schema existed, a query is refused; once it does, never a partial one.
    refused = [read for read in reads[1] if read.returncode]
    assert all("no synthflow tables yet" in read.stderr for read in refused)
    answered = [read for read in reads[1] + reads[2] if read.returncode == 0]
    assert {read.stdout.split()[1] for read in answered} == {"0"}
    assert reads[2] and all(read.returncode == 0 for read in reads[2])  # never blocked, nor failing
    with connect(lake, read_only=True) as con:
        counts = con.execute("SELECT workspace_id, count(*) FROM synthflow.snapshots GROUP BY ALL")
        assert dict(counts.fetchall()) == dict.fromkeys(sim.workspace_ids(), 2)
        later = con.execute(
            "SELECT workspace_id, number FROM synthflow.number_changes "
            "WHERE previous_taken_at IS NOT NULL"
        ).fetchall()
        assert dict(later) == flipped
        history, changes = con.execute(HISTORY).fetchall(), con.execute(CHANGES).fetchall()
    assert run_cli("rebuild-history", env=env).returncode == 0
    with connect(lake, read_only=True) as con:
        assert con.execute(HISTORY).fetchall() == history
        assert con.execute(CHANGES).fetchall() == changes


def test_two_runs_write_the_lake_at_once_when_the_duckdb_pool_allows_two(
    lake: DuckLake, tmp_path: Path
) -> None:
    """As docs/deployment.md says: on an instance that persists (the project's dagster.yaml),
    the pool's limit raised with `dagster instance concurrency set duckdb 2`, two runs hold the
    pool at once, and both store their workspace."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    slow = dict(workspaces=2, numbers_per_workspace=150, page_size_cap=25, latency_s=1.0)
    with demo_simulator(seed=4, **slow) as sim:  # each run reads for ~6 s, holding the pool
        env = {**os.environ, **lake_env(lake, sim, tmp_path), "DAGSTER_HOME": str(home)}
        raised = subprocess.run(
            [BIN / "dagster", "instance", "concurrency", "set", "duckdb", "2"],
            env=env,
            capture_output=True,
            text=True,
        )
        assert raised.returncode == 0, raised.stderr
        writers = [
            subprocess.Popen(
                [sys.executable, "-m", "pipelines.cli", "snapshot", "--workspace", workspace_id],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for workspace_id in sim.workspace_ids()
        ]
        with dg.DagsterInstance.from_config(str(home)) as instance:
            pool = instance.event_log_storage
            wait_until(
                lambda: pool.get_concurrency_info("duckdb").active_slot_count == 2 or None,
                timeout_s=60,
                what="both runs to hold the duckdb pool at once",
                interval_s=0.2,
            )
        for writer in writers:
            assert writer.wait() == 0, writer.stderr.read()
    with connect(lake, read_only=True) as con:
        counts = con.execute("SELECT workspace_id, row_count FROM synthflow.snapshots")
        assert dict(counts.fetchall()) == dict.fromkeys(sim.workspace_ids(), 150)


def test_an_analyst_reads_the_lake_as_it_was_after_an_earlier_run(
    lake: DuckLake, simulator: Simulator, tmp_path: Path
) -> None:
    """The README's examples: the lake's own snapshots, a table read at one of them, and the
    lake as it was after a run named by its ID."""
    env = lake_env(lake, simulator, tmp_path)
    assert run_cli("snapshot", env=env).returncode == 0
    with connect(lake, read_only=True) as con:
        (version,) = con.execute("SELECT max(snapshot_id) FROM lake.snapshots()").fetchone()
        then = con.execute(HISTORY).fetchall()
        (run_id,) = con.execute("SELECT DISTINCT run_id FROM synthflow.snapshots").fetchone()
    first = simulator.workspace_ids()[0]
    simulator.remove_number(first, simulator.numbers(first)[0].number)
    assert run_cli("snapshot", env=env).returncode == 0

    as_of = f"SELECT * FROM synthflow.number_history AT (VERSION => {version}) ORDER BY ALL"
    with connect(lake, read_only=True) as con:
        assert con.execute(HISTORY).fetchall() != then
        assert con.execute(as_of).fetchall() == then
    counted = run_cli("query", "--csv", as_of.replace("*", "count(*)", 1), env=env)
    assert counted.returncode == 0 and counted.stdout.split()[1:] == [str(len(then))]
    after_run = (
        "SET VARIABLE after_run = (SELECT max(snapshot_id) FROM lake.snapshots() "
        f"WHERE commit_extra_info::JSON->>'run_id' = '{run_id}'); "
        "SELECT count(*) FROM synthflow.number_history AT (VERSION => getvariable('after_run'))"
    )
    counted = run_cli("query", "--csv", after_run, env=env)
    assert counted.returncode == 0 and counted.stdout.split()[1:] == [str(len(then))]


DEFAULT_PYTHON = PROJECT_ROOT / ".venv" / "bin" / "python"  # DuckDB 2, as the file has it


@pytest.mark.skipif(
    not DEFAULT_PYTHON.exists(),
    reason="needs the project's default environment (.venv) for the file's side: "
    "scripts/test makes it first",
)
def test_a_files_export_imported_into_an_empty_lake_gives_it_the_same_tables(
    lake: DuckLake, simulator: Simulator, tmp_path: Path
) -> None:
    """Moving over: the file written and exported by DuckDB 2, the lake filled by 1.5.5."""
    file_env = lake_env(lake, simulator, tmp_path) | {
        "SYNTHFLOW_DUCKLAKE_CATALOG": "",
        "SYNTHFLOW_DUCKLAKE_DATA_PATH": "",
        "SYNTHFLOW_DUCKDB_PATH": str(tmp_path / "numbers.duckdb"),
    }

    def on_the_file(*args: str) -> None:
        done = subprocess.run(
            [str(DEFAULT_PYTHON), "-m", "pipelines.cli", *args],
            env={**os.environ, **file_env},
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert done.returncode == 0, done.stderr

    on_the_file("snapshot")
    first = simulator.workspace_ids()[0]
    simulator.set_sid(first, simulator.numbers(first)[0].number, "PN-MOVED")
    on_the_file("snapshot")
    on_the_file("export", str(tmp_path / "out"))

    done = run_cli("import", str(tmp_path / "out"), env=lake_env(lake, simulator, tmp_path))

    assert done.returncode == 0, done.stderr
    with connect(lake, read_only=True) as con:
        for table in ("snapshots", "number_snapshots", "number_history", "number_changes"):
            files = f"{tmp_path}/out/{table}/**/*.parquet"
            columns = ", ".join(
                name for name, *_ in con.execute(f"DESCRIBE synthflow.{table}").fetchall()
            )
            assert (
                con.execute(
                    f"SELECT {columns} FROM synthflow.{table} EXCEPT ALL "
                    f"SELECT {columns} FROM read_parquet('{files}', hive_partitioning = true, "
                    "hive_types = {'workspace_id': VARCHAR})"
                ).fetchall()
                == []
            ), table
            stored = con.execute(f"SELECT count(*) FROM synthflow.{table}").fetchone()[0]
            exported = con.execute(f"SELECT count(*) FROM read_parquet('{files}')").fetchone()
            assert (stored,) == exported, table


def test_the_dagster_job_its_checks_and_the_lateness_sensor_work_on_a_lake(
    lake: DuckLake, simulator: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in lake_env(lake, simulator, tmp_path).items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    late, *fresh = simulator.workspace_ids()
    simulator.break_workspace(late, "truncate")

    with dg.instance_for_test() as instance:
        result = run_job(instance)
        assert not result.success  # one workspace failed, the others are stored
        assert instance.get_materialized_partitions(SNAPSHOTS_KEY) == set(fresh)
        evaluations = result.get_asset_check_evaluations()
        assert evaluations and all(evaluation.passed for evaluation in evaluations)
        ticked = tick_lateness(instance, None)

    assert {(event.partition, event.passed) for event in ticked.asset_events} == {
        (late, False),
        *((workspace_id, True) for workspace_id in fresh),
    }


# The points where a lake's state can differ: nothing stored yet, listings being stored, a
# commit under way, and a signal landing while the lake is written. How SIGINT and SIGTERM end
# a run before anything is stored is the same code on the file, tested at every point there.
@pytest.mark.parametrize(
    ("signal_number", "where"),
    [
        (signal.SIGKILL, "halfway through the pages"),
        (signal.SIGKILL, "after the last page, as listings are stored"),
        (signal.SIGKILL, "a moment into storing and history"),
        (signal.SIGTERM, "after the last page, as listings are stored"),
    ],
)
def test_a_run_killed_or_stopped_on_a_lake_leaves_whole_snapshots_and_the_next_run_exact(
    lake: DuckLake, tmp_path: Path, signal_number: signal.Signals, where: str
) -> None:
    """The crash-safety contract of tests/test_crash_safety.py on a lake: SIGKILL to the whole
    run mid-read or mid-commit, or SIGINT/SIGTERM (the run ends saying so, recorded as over):
    the lake shows whole snapshots only, history equal to a rebuild, and the next run stores
    the simulator's state."""
    with crash_simulator() as sim:
        env = cli_env(sim, tmp_path) | {  # its own configuration: the kill points' pages
            "SYNTHFLOW_DUCKLAKE_CATALOG": lake.catalog,
            "SYNTHFLOW_DUCKLAKE_DATA_PATH": lake.data_path,
            "SYNTHFLOW_DUCKDB_PATH": "",
        }
        assert run_snapshot(env).returncode == 0
        first = sim.workspace_ids()[0]
        sim.remove_number(first, sim.numbers(first)[0].number)
        sim.reset_stats()
        log = tmp_path / "killed.log"

        status = kill_at(start_snapshot(env, log), sim, kill_point(sim, where), log, signal_number)

        if signal_number == signal.SIGKILL:
            assert status == -signal.SIGKILL
        else:
            output = log.read_text(errors="replace")
            assert status == 128 + signal_number, output
            assert f"stopped by {signal_number.name}; nothing partial was stored" in output
            assert runs_left_behind(env) == ([], set())
        with connect(lake, read_only=True) as con:
            assert con.execute(WHOLE).fetchone() == (0,)
            history, changes = con.execute(HISTORY).fetchall(), con.execute(CHANGES).fetchall()
        assert run_cli("rebuild-history", env=env).returncode == 0
        with connect(lake, read_only=True) as con:
            assert (con.execute(HISTORY).fetchall(), con.execute(CHANGES).fetchall()) == (
                history,
                changes,
            )
        done = run_snapshot(env)
        assert done.returncode == 0, done.stdout + done.stderr
        with connect(lake, read_only=True) as con:
            latest = con.execute(
                "SELECT number, sid, is_available FROM synthflow.current_numbers"
            ).fetchall()
        assert set(latest) == {
            (n.number, n.sid, n.is_available) for w in sim.workspace_ids() for n in sim.numbers(w)
        }


def test_snapshots_applied_in_turn_in_one_transaction_keep_every_history_version_on_a_lake(
    lake: DuckLake,
) -> None:
    """Found by the history properties on a lake: with DuckLake's data inlining, one
    transaction that applied a workspace's snapshots out of order (its history rebuilt after
    rows the same transaction inserted for it and other workspaces) lost some of its closed
    versions, every time. A run's group applies each workspace once and no longer does this, but
    the history functions may be called in turn inside one transaction, and must then keep
    every version."""
    unavailable = (False, None)
    cases = [
        ("snap-0", "wc", at(1), {f"+1555000000{i}": unavailable for i in range(6)}),
        ("snap-5", "wb", at(6), {}),
        ("snap-4", "wa", at(5), {f"+1555000000{i}": unavailable for i in range(5)}),
        ("snap-3", "wb", at(4), {f"+1555000000{i}": unavailable for i in range(5)}),
        ("snap-2", "wc", at(3), {}),
        ("snap-1", "wc", at(2), {}),
    ]
    in_turn, versions, changes = one_at_a_time(cases)  # in memory: the reference
    with connect(lake) as con:
        con.execute("BEGIN TRANSACTION")
        for case in cases[:3]:  # three workspaces' first snapshots, applied together
            store_snapshot(con, *case)
        found = apply_snapshots(con, [snapshot_id for snapshot_id, *_ in cases[:3]])
        for case in cases[3:]:  # then older ones in turn: wb rebuilt, wc stepped and rebuilt
            store_snapshot(con, *case)
            found.append(apply_snapshot(con, case[0]))
        con.execute("COMMIT")
        assert found == in_turn
    with connect(lake, read_only=True) as con:
        assert (history_rows(con), change_rows(con)) == (versions, changes)


def test_a_writer_opening_an_up_to_date_lake_commits_nothing(lake: DuckLake) -> None:
    """The schema is written once, not on every connection: each run's commits are its data,
    and concurrent writers do not conflict over the schema."""
    with connect(lake):
        pass
    with connect(lake, read_only=True) as con:
        before = con.execute("SELECT count(*) FROM lake.snapshots()").fetchone()

    with connect(lake):
        pass

    with connect(lake, read_only=True) as con:
        assert con.execute("SELECT count(*) FROM lake.snapshots()").fetchone() == before


def test_every_commit_of_a_run_says_what_it_is_and_a_run_never_checkpoints_the_lake(
    lake: DuckLake, simulator: Simulator, tmp_path: Path
) -> None:
    """A run's commits are its own, described: the schema and its options, the workspaces'
    settings (when they change), its stores under its run ID. No CHECKPOINT (merging files,
    flushing inlined rows: DuckLake's own commits, without a message), which conflicts with
    other writers."""
    env = lake_env(lake, simulator, tmp_path)
    for _ in range(2):
        assert run_cli("snapshot", env=env).returncode == 0
        first = simulator.workspace_ids()[0]
        simulator.remove_number(first, simulator.numbers(first)[0].number)
    with connect(lake, read_only=True) as con:
        commits = con.execute(
            "SELECT author, commit_message, commit_extra_info::JSON->>'run_id' "
            "FROM lake.snapshots() WHERE snapshot_id > 0 ORDER BY snapshot_id"  # 0: DuckLake's
        ).fetchall()
        (run_ids,) = con.execute("SELECT list(DISTINCT run_id) FROM synthflow.snapshots").fetchone()
    assert {author for author, *_ in commits} == {"synthflow-numbers"}
    messages = [message for _, message, _ in commits]
    assert messages[:2] == ["the synthflow schema", "the synthflow schema's options"]
    assert messages.count("the workspaces' names and base URLs") == 1  # the second run's: same
    stored = Counter()  # snapshots stored under each run ID, from the messages
    for _, message, run_id in commits[1:]:
        if run_id is not None:
            count, run = re.fullmatch(r"(\d+) snapshot\(s\) of run (\S+)", message).groups()
            assert run == run_id
            stored[run_id] += int(count)
    assert stored == dict.fromkeys(run_ids, 3)
    assert len(commits) == 3 + len([run for _, _, run in commits if run])
