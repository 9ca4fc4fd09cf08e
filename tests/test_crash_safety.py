"""Crash safety: a `snapshot` killed at any moment leaves a DuckDB file that is whole and usable.

Contract (shared/design.md, "What must always hold" and "DuckDB tables"): a workspace snapshot
is stored whole or not at all, with its history update in the same transaction. So whatever
instant the process dies (SIGKILL: no cleanup, no rollback, no atexit), afterwards
- the DuckDB file opens;
- it holds only whole snapshots: every `synthflow.snapshots` row has exactly `total_records`
  (= `row_count`) rows in `synthflow.number_snapshots`, and no number row lacks its snapshot;
- `number_history` and `number_changes` equal what `rebuild_history` derives from the stored
  snapshots alone;
- the next `snapshot` run exits 0 and stores the simulator's state exactly (its listing and,
  through history, `current_numbers`).
Ctrl-C (SIGINT) is the polite kill: the same guarantees, and the command says it was
interrupted and ends with exit 130, as `pipelines/cli/` promises, without a traceback.

The kill points are deterministic: the simulator counts the pages it has served, the test
polls that count in a bounded loop and kills the command once the count is reached (after
the first page; halfway; after the last page, while listings are stored and history is
brought up to date; on a fresh file, a moment after the last page). The simulator answers
with latency and its state changes between runs, so every run stores snapshots that differ
from the ones before.

`benchmarks/crash_and_contention.py` runs the same loop many more times.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import pty
import random
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
import duckdb
import pytest

from pipelines.config import FetchSettings, Workspace
from pipelines.snapshot import take_snapshots
from pipelines.synthflow.simulator import Simulator, demo_simulator
from pipelines.warehouse.connection import connect
from pipelines.warehouse.history import rebuild_history
from tests.conftest import TEST_KEY

PROJECT_ROOT = Path(__file__).resolve().parents[1]
WORKSPACES = 3
NUMBERS_PER_WORKSPACE = 240
PAGE_SIZE = 20
LATENCY_S = 0.01
# Seconds a command may take, start-up (importing Dagster) included, before a test gives up.
RUN_TIMEOUT_S = 120.0

WHOLE_SNAPSHOT_VIOLATIONS = """
SELECT 'snapshot ' || s.snapshot_id || ': ' || count(n.number) || ' rows, total_records '
       || s.total_records || ', row_count ' || s.row_count
FROM synthflow.snapshots AS s
LEFT JOIN synthflow.number_snapshots AS n USING (snapshot_id)
GROUP BY s.snapshot_id, s.total_records, s.row_count
HAVING count(n.number) <> s.total_records OR count(n.number) <> s.row_count
UNION ALL
SELECT 'number rows of snapshot ' || snapshot_id || ' without its snapshots row: ' || count(*)
FROM synthflow.number_snapshots
WHERE snapshot_id NOT IN (SELECT snapshot_id FROM synthflow.snapshots)
GROUP BY snapshot_id
ORDER BY 1
"""
HISTORY = "SELECT * FROM synthflow.number_history ORDER BY ALL"
CHANGES = "SELECT * FROM synthflow.number_changes ORDER BY ALL"
LATEST_LISTING = """
SELECT workspace_id, number, sid, is_available FROM synthflow.number_snapshots
WHERE snapshot_id IN (
    SELECT snapshot_id FROM synthflow.snapshots
    QUALIFY row_number() OVER (PARTITION BY workspace_id ORDER BY taken_at DESC) = 1)
"""
CURRENT = "SELECT workspace_id, number, sid, is_available FROM synthflow.current_numbers"


# --- the harness (also used by benchmarks/crash_and_contention.py) ---------------------------


def crash_simulator(seed: int = 7) -> Simulator:
    """Workspaces big enough, and answers slow enough, that one run pages for a second or two."""
    return demo_simulator(
        seed=seed,
        workspaces=WORKSPACES,
        numbers_per_workspace=NUMBERS_PER_WORKSPACE,
        latency_s=LATENCY_S,
    )


def fetch_settings() -> FetchSettings:
    return FetchSettings(page_size=PAGE_SIZE, requests_per_second=40, max_backoff_s=0.05)


def cli_env(simulator: Simulator, directory: Path) -> dict[str, str]:
    """The environment of a `synthflow-numbers` command pointed at the simulator, with an
    instance that persists, as a deployment has: DAGSTER_HOME holding the project's
    dagster.yaml."""
    home = directory / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", home / "dagster.yaml")
    config = directory / "synthflow.yaml"
    fetch = fetch_settings()
    config.write_text(
        f"fetch:\n  page_size: {fetch.page_size}\n"
        f"  requests_per_second: {fetch.requests_per_second}\n"
        f"  max_backoff_s: {fetch.max_backoff_s}\n"
    )
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "SYNTHFLOW_BASE_URL": simulator.base_url,
        "SYNTHFLOW_WORKSPACES": ",".join(simulator.workspace_ids()),
        "SYNTHFLOW_API_KEY": TEST_KEY,
        "SYNTHFLOW_DUCKDB_PATH": str(directory / "numbers.duckdb"),
        "SYNTHFLOW_CONFIG": str(config),
    }


def pages_per_run(simulator: Simulator) -> int:
    """Pages one complete run of every workspace is served (no faults are switched on)."""
    return sum(
        max(1, math.ceil(len(simulator.numbers(wid)) / PAGE_SIZE))
        for wid in simulator.workspace_ids()
    )


def store_in_process(simulator: Simulator, path: Path, run_id: str) -> None:
    """A snapshot of every workspace stored without the CLI: history to crash into."""
    workspaces = [
        Workspace(id=wid, name=None, base_url=simulator.base_url, api_key_env="UNUSED")
        for wid in simulator.workspace_ids()
    ]
    outcomes = take_snapshots(
        workspaces,
        api_key=lambda _: TEST_KEY,
        fetch=fetch_settings(),
        connect=lambda: connect(path),
        run_id=run_id,
    )
    assert all(outcome.succeeded for outcome in outcomes), [o.error for o in outcomes]


def change_state(simulator: Simulator, rng: random.Random) -> None:
    """Assign, release, re-SID, remove, add and move a few numbers, so the next snapshot differs."""
    ids = simulator.workspace_ids()
    for workspace_id in ids:
        numbers = simulator.numbers(workspace_id)
        for record in rng.sample(numbers, 4):
            simulator.set_available(workspace_id, record.number, not record.is_available)
        resid = rng.choice(numbers)
        simulator.set_sid(workspace_id, resid.number, simulator.new_number().sid)
        simulator.remove_number(workspace_id, rng.choice(numbers).number)
        simulator.add_number(workspace_id, simulator.new_number(rng.choice(["US", "GB", "DE"])))
    source, target = rng.sample(ids, 2)
    simulator.move_number(rng.choice(simulator.numbers(source)).number, source, target)


def expected_listing(simulator: Simulator) -> set[tuple]:
    return {
        (wid, n.number, n.sid, n.is_available)
        for wid in simulator.workspace_ids()
        for n in simulator.numbers(wid)
    }


def start_snapshot(env: dict[str, str], log: Path) -> subprocess.Popen:
    """`synthflow-numbers snapshot` in its own process group, so a kill takes all of it."""
    with log.open("wb") as output:
        return subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "snapshot"],
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def run_snapshot(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "snapshot"],
        env=env,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )


@dataclass(frozen=True)
class KillPoint:
    """Kill once the simulator has served `pages` pages of the run, then `delay_s` later."""

    pages: int
    delay_s: float = 0.0


def kill_at(
    process: subprocess.Popen,
    simulator: Simulator,
    point: KillPoint,
    log: Path,
    signal_number: signal.Signals = signal.SIGKILL,
) -> int:
    """Signal the command's process group at the point (SIGKILL unless told) and return its
    exit status; fails if it ended, or never got to the point, first."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while simulator.stats.pages_served < point.pages:
        if process.poll() is not None:
            raise AssertionError(
                f"the snapshot ended (exit {process.returncode}) before page {point.pages} was "
                f"served; output:\n{log.read_text(errors='replace')}"
            )
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)
            raise AssertionError(f"page {point.pages} was not served within {RUN_TIMEOUT_S} s")
        time.sleep(0.002)
    if point.delay_s:
        time.sleep(point.delay_s)  # where in the store phase the kill lands, not a sync point
    if process.poll() is not None:
        raise AssertionError(
            f"the snapshot ended (exit {process.returncode}) before the kill; output:\n"
            + log.read_text(errors="replace")
        )
    os.killpg(process.pid, signal_number)
    try:
        return process.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
        raise AssertionError(
            f"the snapshot did not end within {RUN_TIMEOUT_S} s of {signal_number!r}"
        ) from None


@dataclass
class AfterCrash:
    """What a killed run left behind."""

    whole_snapshot_violations: list[str] = field(default_factory=list)
    history_mismatches: list[str] = field(default_factory=list)
    snapshots_by_run: dict[str, int] = field(default_factory=dict)

    @property
    def snapshots(self) -> int:
        return sum(self.snapshots_by_run.values())


def inspect_after_crash(path: Path) -> AfterCrash:
    """Open a copy of the file (WAL included) as an analyst would, read-only, and check that it
    holds whole snapshots; then as a writer would, and compare history with a rebuild inside a
    transaction that is rolled back. A copy, so the next run meets the file as the kill left it.
    """
    found = AfterCrash()
    with tempfile.TemporaryDirectory() as scratch:
        copy = Path(scratch) / path.name
        shutil.copyfile(path, copy)
        wal = path.with_name(path.name + ".wal")
        if wal.exists():
            shutil.copyfile(wal, copy.with_name(copy.name + ".wal"))
        with duckdb.connect(str(copy), read_only=True) as con:
            found.whole_snapshot_violations = [
                row[0] for row in con.execute(WHOLE_SNAPSHOT_VIOLATIONS).fetchall()
            ]
            found.snapshots_by_run = dict(
                con.execute(
                    "SELECT run_id, count(*) FROM synthflow.snapshots GROUP BY ALL"
                ).fetchall()
            )
        with duckdb.connect(str(copy)) as con:
            history, changes = con.execute(HISTORY).fetchall(), con.execute(CHANGES).fetchall()
            con.execute("BEGIN TRANSACTION")
            rebuild_history(con)
            rebuilt_history = con.execute(HISTORY).fetchall()
            rebuilt_changes = con.execute(CHANGES).fetchall()
            con.execute("ROLLBACK")
    for name, stored, rebuilt in (
        ("number_history", history, rebuilt_history),
        ("number_changes", changes, rebuilt_changes),
    ):
        if stored != rebuilt:
            extra, missing = set(stored) - set(rebuilt), set(rebuilt) - set(stored)
            found.history_mismatches.append(
                f"{name}: {len(extra)} row(s) not in the rebuild (e.g. {list(extra)[:2]}), "
                f"{len(missing)} missing (e.g. {list(missing)[:2]})"
            )
    return found


def runs_left_behind(env: dict[str, str]) -> tuple[list[str], set[str]]:
    """Runs of the instance that are not finished, and runs holding a pool slot."""
    with dg.DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
        unfinished = [
            f"{run.run_id[:8]} {run.status.value}"
            for run in instance.get_runs()
            if not run.is_finished
        ]
        return unfinished, instance.event_log_storage.get_concurrency_run_ids()


def stored_state(path: Path) -> tuple[set[tuple], set[tuple]]:
    """The newest snapshot of every workspace, and current_numbers, as (workspace, record)."""
    with duckdb.connect(str(path), read_only=True) as con:
        return set(con.execute(LATEST_LISTING).fetchall()), set(con.execute(CURRENT).fetchall())


# --- the specification -----------------------------------------------------------------------


@pytest.fixture
def sim():
    with crash_simulator() as simulator:
        yield simulator


def assert_the_next_run_is_exact(
    env: dict[str, str], sim: Simulator, path: Path, after: AfterCrash
) -> None:
    """The run after a crash succeeds, stores the simulator's state exactly and adds one whole
    snapshot per workspace to what the crash left; no run is left unfinished or holding a
    slot."""
    result = run_snapshot(env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert runs_left_behind(env) == ([], set())
    latest, current = stored_state(path)
    assert latest == expected_listing(sim)
    assert current == expected_listing(sim)
    final = inspect_after_crash(path)
    assert (final.whole_snapshot_violations, final.history_mismatches) == ([], [])
    assert final.snapshots == after.snapshots + WORKSPACES


def kill_point(simulator: Simulator, where: str) -> KillPoint:
    pages = pages_per_run(simulator)
    return {
        "after the first page": KillPoint(1),
        "halfway through the pages": KillPoint(pages // 2),
        "after the last page, as listings are stored": KillPoint(pages),
        "a moment into storing and history": KillPoint(pages, delay_s=0.05),
    }[where]


@pytest.mark.parametrize(
    "where",
    [
        "after the first page",
        "halfway through the pages",
        "after the last page, as listings are stored",
    ],
)
def test_a_snapshot_killed_mid_run_leaves_whole_snapshots_true_history_and_a_working_file(
    sim: Simulator, tmp_path: Path, where: str
):
    rng = random.Random(where)
    path = tmp_path / "numbers.duckdb"
    env = cli_env(sim, tmp_path)
    store_in_process(sim, path, run_id="before-the-crash")
    change_state(sim, rng)
    sim.reset_stats()

    log = tmp_path / "killed.log"
    assert kill_at(start_snapshot(env, log), sim, kill_point(sim, where), log) == -signal.SIGKILL
    unfinished, _ = runs_left_behind(env)
    assert len(unfinished) == 1  # the killed run: Dagster cannot know it died

    after = inspect_after_crash(path)
    assert after.whole_snapshot_violations == []
    assert after.history_mismatches == []
    assert after.snapshots_by_run["before-the-crash"] == WORKSPACES  # nothing older was lost

    change_state(sim, rng)
    assert_the_next_run_is_exact(env, sim, path, after)


def test_the_first_snapshot_killed_while_storing_leaves_a_fresh_file_usable(
    sim: Simulator, tmp_path: Path
):
    path = tmp_path / "numbers.duckdb"
    env = cli_env(sim, tmp_path)
    log = tmp_path / "killed.log"
    point = kill_point(sim, "a moment into storing and history")
    assert kill_at(start_snapshot(env, log), sim, point, log) == -signal.SIGKILL

    after = inspect_after_crash(path)
    assert after.whole_snapshot_violations == []
    assert after.history_mismatches == []

    assert_the_next_run_is_exact(env, sim, path, after)


@pytest.mark.parametrize(
    ("signal_number", "where"),
    [
        (signal.SIGINT, "halfway through the pages"),
        (signal.SIGTERM, "halfway through the pages"),
        (signal.SIGTERM, "after the last page, as listings are stored"),
    ],
)
def test_a_snapshot_stopped_by_a_signal_says_so_and_keeps_only_whole_snapshots(
    sim: Simulator, tmp_path: Path, signal_number: signal.Signals, where: str
):
    """Ctrl-C reaches the whole foreground process group as SIGINT; systemd, Docker and
    Kubernetes send SIGTERM first. The command ends within seconds with exit 128 + the signal
    and one line that says so, without a traceback; the Dagster run is recorded as failed,
    never left STARTED; only whole snapshots are stored."""
    path = tmp_path / "numbers.duckdb"
    env = cli_env(sim, tmp_path)
    store_in_process(sim, path, run_id="before-the-signal")
    change_state(sim, random.Random(where))
    sim.reset_stats()

    log = tmp_path / "stopped.log"
    status = kill_at(start_snapshot(env, log), sim, kill_point(sim, where), log, signal_number)

    output = log.read_text(errors="replace")
    assert status == 128 + signal_number, output
    assert f"stopped by {signal_number.name}; nothing partial was stored" in output
    assert "Traceback" not in output
    assert runs_left_behind(env) == ([], set())
    after = inspect_after_crash(path)
    assert after.whole_snapshot_violations == []
    assert after.history_mismatches == []
    assert_the_next_run_is_exact(env, sim, path, after)


HIDE_CURSOR, SHOW_CURSOR = b"\x1b[?25l", b"\x1b[?25h"


def test_a_run_stopped_in_a_terminal_takes_its_bar_away_and_shows_the_cursor(tmp_path: Path):
    """In a terminal the progress bar hides the cursor while it draws; a run a signal ends
    before every workspace finished takes the bar away and shows the cursor again, so the
    terminal is left as it was, the stop message last."""
    slow = dict(workspaces=2, numbers_per_workspace=200, page_size_cap=20, latency_s=0.2)
    with demo_simulator(seed=11, **slow) as simulator:
        controller, terminal = pty.openpty()
        command = subprocess.Popen(
            [sys.executable, "-m", "pipelines.cli", "snapshot"],
            stdin=terminal,
            stdout=terminal,
            stderr=terminal,
            env=cli_env(simulator, tmp_path),
            cwd=PROJECT_ROOT,
        )
        os.close(terminal)
        shown = b""
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while time.monotonic() < deadline:
            if not select.select([controller], [], [], 1.0)[0]:
                continue  # starting: nothing drawn yet
            try:
                chunk = os.read(controller, 65536)
            except OSError:  # the command ended, and its terminal with it
                break
            if HIDE_CURSOR in chunk:  # the bar is drawn: the listings are being read
                command.send_signal(signal.SIGTERM)
            shown += chunk
        os.close(controller)
        status = command.wait(timeout=RUN_TIMEOUT_S)

    assert status == 128 + signal.SIGTERM, shown[-2000:]
    assert shown.count(HIDE_CURSOR) == shown.count(SHOW_CURSOR) == 1, shown[-2000:]
    after_the_message = shown.split(b"nothing partial was stored", 1)[1]
    assert b"snapshot" not in after_the_message  # the bar is not drawn again after it


def open_instance_at_once(home: str, barrier, outcomes) -> None:
    """In a process of its own: open the instance of `home` the moment every other is ready."""
    from pipelines.cli.snapshot import dagster_instance

    os.environ["DAGSTER_HOME"] = home
    barrier.wait()
    try:
        with dagster_instance():
            outcomes.put("opened")
    except Exception as error:
        outcomes.put(f"{type(error).__name__}: {str(error)[:120]}")


def test_processes_opening_a_fresh_instance_at_the_same_moment_all_open_it(tmp_path):
    """The race itself, made certain with a barrier: without the command's lock, most of six
    processes die in sqlite ("table runs already exists") or alembic."""
    shutil.copyfile(PROJECT_ROOT / "dagster.yaml", tmp_path / "dagster.yaml")
    context = multiprocessing.get_context("spawn")
    barrier, outcomes = context.Barrier(6), context.Queue()
    processes = [
        context.Process(target=open_instance_at_once, args=(str(tmp_path), barrier, outcomes))
        for _ in range(6)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=RUN_TIMEOUT_S)
    assert [outcomes.get(timeout=1) for _ in processes] == ["opened"] * 6


def test_snapshots_started_together_on_a_fresh_instance_all_succeed(sim: Simulator, tmp_path):
    """Each creates the instance's storage if it finds none; they take turns at the writer."""
    env = cli_env(sim, tmp_path)
    logs = [tmp_path / f"together-{i}.log" for i in range(4)]
    processes = [start_snapshot(env, log) for log in logs]
    for process, log in zip(processes, logs, strict=True):
        assert process.wait(timeout=RUN_TIMEOUT_S) == 0, log.read_text(errors="replace")
    assert runs_left_behind(env) == ([], set())
    assert stored_state(tmp_path / "numbers.duckdb")[1] == expected_listing(sim)
