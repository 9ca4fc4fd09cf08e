"""Concurrent writers: processes that share the DuckDB file take turns and lose nothing.

Contract (shared/design.md, "What must always hold"): DuckDB allows one writing process at a
time. A writer that finds the file held by another process waits a bounded, configurable time
(`database.lock_timeout_s`, 60 s by default), then fails with exit 2 and a message that says
the database is in use and by which process, without a traceback. Nothing is lost either way:
- two `snapshot` commands at once both finish with exit 0, one after the other, each run's
  snapshots stored once and whole;
- `rebuild-history` while a `snapshot` runs waits for it, and both finish with exit 0;
- an analyst's read-only connection in another process makes a `snapshot` wait until it is
  closed, and then the snapshot succeeds; with a short lock timeout the snapshot instead
  fails naming the analyst's process, and the file is left exactly as it was.
After every scenario the file holds only whole snapshots and history equals a rebuild.

A test sees that a command is waiting for the lock, rather than guessing with a sleep, by
watching the file with inotify: every refused attempt to open it for writing closes it again
(IN_CLOSE_WRITE). A command that holds the lock is frozen with SIGSTOP where a test needs it
to keep holding it.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from pipelines.synthflow.simulator import Simulator
from tests.test_crash_safety import (
    RUN_TIMEOUT_S,
    WORKSPACES,
    change_state,
    cli_env,
    crash_simulator,
    expected_listing,
    inspect_after_crash,
    pages_per_run,
    store_in_process,
    stored_state,
)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="watches the file with inotify")

IN_CLOSE_WRITE = 0x08
SNAPSHOTS_BY_RUN = """
SELECT run_id, list(workspace_id ORDER BY workspace_id), min(taken_at)
FROM synthflow.snapshots GROUP BY run_id ORDER BY min(taken_at)
"""
LISTING_OF_RUN = """
SELECT workspace_id, number, sid, is_available FROM synthflow.number_snapshots
JOIN synthflow.snapshots USING (snapshot_id, workspace_id) WHERE run_id = ?
"""
DOUBLED_CHANGES = """
SELECT workspace_id, number, changed_at, change_type, count(*) FROM synthflow.number_changes
GROUP BY ALL HAVING count(*) > 1
"""


class RefusedWriteOpens:
    """Counts attempts by other processes to open the file for writing that were given up.

    DuckDB opens the file, fails to lock it and closes it again: an inotify IN_CLOSE_WRITE.
    While another process holds the file, each such event is one refused attempt, so two of
    them show a writer that is waiting and retrying.
    """

    def __init__(self, path: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if (
            self._fd < 0
            or self._libc.inotify_add_watch(self._fd, os.fsencode(path), IN_CLOSE_WRITE) < 0
        ):
            raise OSError(ctypes.get_errno(), f"cannot watch {path} with inotify")
        self.count = 0

    def wait_for(self, count: int, *, while_running: subprocess.Popen, timeout_s: float) -> None:
        """Return once `count` refused attempts were seen; fail if the process ends first."""
        deadline = time.monotonic() + timeout_s
        while self.count < count:
            if while_running.poll() is not None:
                raise AssertionError(
                    f"the command ended (exit {while_running.returncode}) after {self.count} "
                    f"refused attempt(s) instead of waiting; output:\n{output(while_running)}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"saw {self.count} refused attempt(s) in {timeout_s} s")
            ready, _, _ = select.select([self._fd], [], [], min(remaining, 0.2))
            if ready:
                data = os.read(self._fd, 65536)
                offset = 0
                while offset < len(data):
                    _, mask, _, length = struct.unpack_from("iIII", data, offset)
                    offset += 16 + length
                    self.count += bool(mask & IN_CLOSE_WRITE)

    def close(self) -> None:
        os.close(self._fd)


_started: list[subprocess.Popen] = []


def start_cli(env: dict[str, str], *args: str) -> subprocess.Popen:
    """A `synthflow-numbers` command in its own process group, ended by the test at the latest."""
    process = subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    _started.append(process)
    return process


@pytest.fixture(autouse=True)
def no_command_outlives_its_test() -> Iterator[None]:
    yield
    while _started:
        process = _started.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate(timeout=30)


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of a command, waiting a bounded time for it."""
    try:
        stdout, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        stdout, stderr = process.communicate(timeout=30)
        raise AssertionError(f"{process.args} did not finish in {RUN_TIMEOUT_S} s") from None
    return process.returncode, stdout, stderr


def output(process: subprocess.Popen) -> str:
    stdout, stderr = process.communicate(timeout=30)
    return stdout + stderr


def wait_for_pages(simulator: Simulator, pages: int, process: subprocess.Popen) -> None:
    """Poll (bounded) until the simulator has served `pages` pages since its stats reset."""
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while simulator.stats.pages_served < pages:
        if process.poll() is not None:
            raise AssertionError(f"the command ended first:\n{output(process)}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{pages} pages were not served within {RUN_TIMEOUT_S} s")
        time.sleep(0.005)


def table_contents(path: Path) -> dict[str, list[tuple]]:
    """Every row of every table in the file, for a before/after comparison."""
    with duckdb.connect(str(path), read_only=True) as con:
        tables = con.execute(
            "SELECT schema_name, table_name FROM duckdb_tables() ORDER BY ALL"
        ).fetchall()
        return {
            f"{schema}.{table}": con.execute(
                f'SELECT * FROM "{schema}"."{table}" ORDER BY ALL'
            ).fetchall()
            for schema, table in tables
        }


def assert_whole_and_true(path: Path) -> None:
    after = inspect_after_crash(path)
    assert after.whole_snapshot_violations == []
    assert after.history_mismatches == []
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute(DOUBLED_CHANGES).fetchall() == []


class Analyst:
    """A read-only DuckDB connection held open in another process, as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.process: subprocess.Popen | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def __enter__(self) -> Analyst:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import duckdb, sys\n"
                "con = duckdb.connect(sys.argv[1], read_only=True)\n"
                "con.execute('SELECT count(*) FROM synthflow.snapshots').fetchall()\n"
                "print('holding', flush=True)\n"
                "sys.stdin.read()\n"
                "con.close()\n",
                str(self.path),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout.readline().strip() == "holding"
        return self

    def close(self) -> None:
        """Close the connection and end the process."""
        if self.process is not None and self.process.poll() is None:
            self.process.communicate("", timeout=30)

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with crash_simulator(seed=21) as simulator:
        yield simulator


@pytest.fixture
def env(sim: Simulator, tmp_path: Path) -> dict[str, str]:
    return cli_env(sim, tmp_path)


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "numbers.duckdb"


@pytest.fixture
def stored_before(sim: Simulator, db: Path) -> dict[str, list[tuple]]:
    """Snapshots already in the file, then the state changed; returns every table's rows."""
    store_in_process(sim, db, run_id="stored-before")
    change_state(sim, random.Random(sim.workspace_ids()[0]))
    sim.reset_stats()
    return table_contents(db)


def test_two_snapshots_at_once_both_succeed_one_after_the_other(sim, env, db):
    before = expected_listing(sim)
    sim.reset_stats()
    first, second = start_cli(env, "snapshot"), start_cli(env, "snapshot")
    # The run that got the file has now read every page; the other, waiting for the file,
    # has read nothing yet, so it reads the state after this change.
    wait_for_pages(sim, pages_per_run(sim), first)
    change_state(sim, random.Random(1))
    results = [finish(first), finish(second)]

    for code, stdout, stderr in results:
        assert code == 0, stdout + stderr
        assert "Traceback" not in stderr
    with duckdb.connect(str(db), read_only=True) as con:
        runs = con.execute(SNAPSHOTS_BY_RUN).fetchall()
        assert len(runs) == 2, runs
        assert all(len(workspaces) == WORKSPACES for _, workspaces, _ in runs), runs
        earlier, later = (set(con.execute(LISTING_OF_RUN, [run[0]]).fetchall()) for run in runs)
    assert earlier == before
    assert later == expected_listing(sim)
    assert stored_state(db) == (expected_listing(sim), expected_listing(sim))
    assert_whole_and_true(db)


def test_rebuild_history_during_a_snapshot_waits_for_it_and_both_succeed(
    sim, env, db, stored_before
):
    watch = RefusedWriteOpens(db)
    snapshot = start_cli(env, "snapshot")
    try:
        wait_for_pages(sim, 1, snapshot)  # it reads with the file open: it holds the file
        os.killpg(snapshot.pid, signal.SIGSTOP)  # and keeps holding it until SIGCONT
        rebuild = start_cli(env, "rebuild-history")
        watch.wait_for(2, while_running=rebuild, timeout_s=RUN_TIMEOUT_S)
    finally:
        os.killpg(snapshot.pid, signal.SIGCONT)
        watch.close()

    snapshot_code, snapshot_out, snapshot_err = finish(snapshot)
    rebuild_code, rebuild_out, rebuild_err = finish(rebuild)
    assert snapshot_code == 0, snapshot_out + snapshot_err
    assert rebuild_code == 0, rebuild_out + rebuild_err
    assert "Rebuilt history for all workspaces" in rebuild_out
    assert stored_state(db) == (expected_listing(sim), expected_listing(sim))
    assert_whole_and_true(db)


def test_a_snapshot_waits_for_an_analysts_read_only_connection_then_succeeds(
    sim, env, db, stored_before
):
    with Analyst(db) as analyst, contextlib.closing(RefusedWriteOpens(db)) as watch:
        snapshot = start_cli(env, "snapshot")
        watch.wait_for(2, while_running=snapshot, timeout_s=RUN_TIMEOUT_S)
        assert sim.stats.pages_served == 0  # it waits for the file before reading anything
        analyst.close()

    code, stdout, stderr = finish(snapshot)
    assert code == 0, stdout + stderr
    assert stored_state(db) == (expected_listing(sim), expected_listing(sim))
    with duckdb.connect(str(db), read_only=True) as con:
        runs = [run_id for run_id, _, _ in con.execute(SNAPSHOTS_BY_RUN).fetchall()]
    assert len(runs) == 2 and runs[0] == "stored-before"
    assert_whole_and_true(db)


def test_with_a_short_lock_timeout_the_snapshot_fails_naming_the_analysts_process(
    sim, env, db, stored_before
):
    config = Path(env["SYNTHFLOW_CONFIG"])
    config.write_text(config.read_text() + "database:\n  lock_timeout_s: 1\n")
    with Analyst(db) as analyst, contextlib.closing(RefusedWriteOpens(db)) as watch:
        snapshot = start_cli(env, "snapshot")
        watch.wait_for(1, while_running=snapshot, timeout_s=RUN_TIMEOUT_S)
        refused_since = time.monotonic()
        code, stdout, stderr = finish(snapshot)
        waited = time.monotonic() - refused_since

    assert code == 2, stdout + stderr
    assert "in use by process" in stderr
    assert f"process {analyst.pid} " in stderr
    assert "lock_timeout_s" in stderr  # the fix: let that process finish, or wait longer
    assert "Traceback" not in stderr
    # It waited the configured second (retrying), not the default minute, nor not at all.
    assert 0.9 <= waited < 30, waited
    assert table_contents(db) == stored_before
    assert_whole_and_true(db)
