"""Does a killed `snapshot` ever leave a partial snapshot or a stuck run, and do writers take turns?

The loop of tests/test_crash_safety.py, many more times, as a deployment runs it: every
command has DAGSTER_HOME set to a folder holding the project's dagster.yaml, one persistent
sqlite instance for the whole loop, so it accumulates the runs that were killed. A simulator
(3 workspaces of 240 numbers, 10 ms latency) changes its numbers before every run. Each run is
signalled at a seeded random point: half of them after a random number of pages served, half
after the last page plus a random delay of up to 150 ms (the write phase: storing listings,
bringing history up to date, running checks).

SIGKILL (`--kills`, no cleanup at all). After each kill:
- whole-snapshot violations: a `synthflow.snapshots` row whose number rows are not exactly
  `total_records` = `row_count`, or number rows without their snapshots row;
- history mismatches: `number_history` or `number_changes` differ from `rebuild_history`;
- the next `snapshot`, which must release the dead run (mark it failed, free its pool slot):
  it fails if it does not exit 0 or does not store the simulator's state exactly (newest
  listing and `current_numbers`); it must take at most 30 s (the median and the maximum of
  its wall time are shown); afterwards no run may be left unfinished and no pool slot held.

SIGTERM (`--terms`, what systemd, Docker and Kubernetes send first). The command must end with
exit 143 and the line "stopped by SIGTERM; nothing partial was stored", or with exit 0 when
the signal came after it had stored everything (counted apart); another status, a
"Traceback" in its output, or no end within the harness's timeout is a failure. Afterwards no
run may be left unfinished or holding a pool slot, snapshots are whole and history equals a
rebuild.

Contention (`--pairs`): two `snapshot` commands started at once plus `rebuild-history` once
one of them reads; every command must exit 0, each run's snapshots be stored once and whole,
history equal a rebuild, the newest listing equal the simulator's state, and no run be left
unfinished or holding a slot.

Every count marked "must be 0" must be 0; the exit status is 1 otherwise, and the work
directory (each command's output, the DuckDB files, the Dagster instances) is then kept for
a look. Commands run with bytecode caching on (PYTHONPYCACHEPREFIX in the work directory), as
an installed deployment has it. A kill costs two runs of the command (start-up included), a
SIGTERM one: 3-10 s a run on 2 cores, about 9 min for the defaults.

Run: uv run python benchmarks/crash_and_contention.py [--kills N] [--terms N] [--pairs M]
     [--seed S] [--keep]
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, fields
from pathlib import Path

import duckdb

from tests.test_crash_safety import (
    RUN_TIMEOUT_S,
    WORKSPACES,
    KillPoint,
    change_state,
    cli_env,
    crash_simulator,
    expected_listing,
    inspect_after_crash,
    kill_at,
    pages_per_run,
    run_snapshot,
    runs_left_behind,
    start_snapshot,
    stored_state,
)

# The bound on the run after a kill, which must release the dead run first.
NEXT_RUN_LIMIT_S = 30.0


@dataclass
class KillCounts:
    kills: int = 0
    ended_before_the_kill: int = 0
    failed_or_hung_before_the_kill: int = 0
    killed_with_no_workspace_stored: int = 0
    killed_with_some_workspaces_stored: int = 0
    killed_with_every_workspace_stored: int = 0
    whole_snapshot_violations: int = 0
    history_mismatches: int = 0
    next_runs_that_released_a_dead_run: int = 0
    next_runs_that_failed: int = 0
    next_runs_slower_than_30_s: int = 0
    runs_left_unfinished_after_next_run: int = 0
    pool_slots_held_after_next_run: int = 0


@dataclass
class TermCounts:
    sigterms: int = 0
    ended_before_the_signal: int = 0
    stopped_with_exit_143: int = 0
    finished_its_work_exit_0: int = 0
    failures: int = 0
    runs_left_unfinished: int = 0
    pool_slots_held: int = 0
    whole_snapshot_violations: int = 0
    history_mismatches: int = 0


@dataclass
class ContentionCounts:
    concurrent_rounds: int = 0
    failed_commands: int = 0
    whole_snapshot_violations: int = 0
    history_mismatches: int = 0
    runs_not_stored_exactly_once: int = 0
    wrong_final_state: int = 0
    runs_left_unfinished: int = 0
    pool_slots_held: int = 0


INFORMATIONAL = {
    "kills",
    "ended_before_the_kill",
    "killed_with_no_workspace_stored",
    "killed_with_some_workspaces_stored",
    "killed_with_every_workspace_stored",
    "next_runs_that_released_a_dead_run",
    "sigterms",
    "ended_before_the_signal",
    "stopped_with_exit_143",
    "finished_its_work_exit_0",
    "concurrent_rounds",
}


def command_env(simulator, directory: Path, pycache: Path) -> dict[str, str]:
    """The harness's environment (DAGSTER_HOME with the project's dagster.yaml, the simulator),
    with bytecode caching on, as an installed deployment has it: this environment sets
    PYTHONDONTWRITEBYTECODE=1, and every command would otherwise compile Dagster again."""
    env = cli_env(simulator, directory)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return {**env, "PYTHONPYCACHEPREFIX": str(pycache)}


def random_kill_point(rng: random.Random, pages: int) -> KillPoint:
    if rng.random() < 0.5:
        return KillPoint(rng.randint(1, pages))
    return KillPoint(pages, delay_s=rng.uniform(0.0, 0.15))


def signal_at(
    env: dict[str, str], simulator, point: KillPoint, log: Path, signum: signal.Signals
) -> tuple[int | None, str | None]:
    """Start a snapshot and signal it at the point: (its exit status, None), or when it ended
    or hung before the point (its exit status, why); the status is None if it never ended."""
    process = start_snapshot(env, log)
    try:
        return kill_at(process, simulator, point, log, signum), None
    except AssertionError as ended:
        return process.poll(), str(ended).splitlines()[0]


def count_left_behind(env: dict[str, str], label: str) -> tuple[int, int]:
    """Runs of the instance left unfinished, and runs holding a pool slot; printed if any."""
    unfinished, slots = runs_left_behind(env)
    if unfinished or slots:
        print(f"  {label}: left unfinished {unfinished}, holding a slot {sorted(slots)}")
    return len(unfinished), len(slots)


def check_stored(path: Path, label: str) -> tuple[int, int, int]:
    """Whole-snapshot violations, history mismatches (printed if any) and snapshots stored."""
    after = inspect_after_crash(path)
    for problem in after.whole_snapshot_violations + after.history_mismatches:
        print(f"  {label}: {problem}")
    return len(after.whole_snapshot_violations), len(after.history_mismatches), after.snapshots


def kill_loop(kills, simulator, env, rng, logs: Path, counts: KillCounts, next_seconds) -> None:
    path = Path(env["SYNTHFLOW_DUCKDB_PATH"])
    stored_before = check_stored(path, "before the kills")[2] if path.exists() else 0
    for number in range(1, kills + 1):
        label = f"kill {number}"
        change_state(simulator, rng)
        simulator.reset_stats()
        point = random_kill_point(rng, pages_per_run(simulator))
        started = time.monotonic()
        status, ended = signal_at(
            env, simulator, point, logs / f"kill-{number}.log", signal.SIGKILL
        )
        if ended is None:
            counts.kills += 1
        elif status == 0:
            counts.ended_before_the_kill += 1
            print(f"  {label}: not killed ({ended})")
        else:
            counts.failed_or_hung_before_the_kill += 1
            print(f"  {label}: failed or hung before the kill ({ended})")
        violations, mismatches, stored = check_stored(path, label)
        counts.whole_snapshot_violations += violations
        counts.history_mismatches += mismatches
        stored_by_the_killed_run = stored - stored_before
        if stored_by_the_killed_run == 0:
            counts.killed_with_no_workspace_stored += 1
        elif stored_by_the_killed_run < WORKSPACES:
            counts.killed_with_some_workspaces_stored += 1
        else:
            counts.killed_with_every_workspace_stored += 1

        change_state(simulator, rng)
        seconds, failure, released = next_run(env, simulator, path, logs / f"next-{number}.log")
        next_seconds.append(seconds)
        counts.next_runs_that_released_a_dead_run += released
        if failure:
            counts.next_runs_that_failed += 1
            print(f"  {label}: next run: {failure}")
        if seconds > NEXT_RUN_LIMIT_S:
            counts.next_runs_slower_than_30_s += 1
            print(f"  {label}: next run took {seconds:.1f} s")
        unfinished, slots = count_left_behind(env, f"{label}, after the next run")
        counts.runs_left_unfinished_after_next_run += unfinished
        counts.pool_slots_held_after_next_run += slots
        stored_before = check_stored(path, f"{label}, after the next run")[2]
        print(
            f"  {label}/{kills}: pages {point.pages}, delay {point.delay_s:.2f} s, "
            f"{stored_by_the_killed_run} of its workspaces stored, next run {seconds:.1f} s"
            f"{' (released a dead run)' if released else ''}, "
            f"{time.monotonic() - started:.1f} s",
            flush=True,
        )


def next_run(env, simulator, path: Path, log: Path) -> tuple[float, str | None, bool]:
    """The snapshot after a kill: (its wall time, why it failed or None, whether it released
    a dead run)."""
    started = time.monotonic()
    try:
        result = run_snapshot(env)
    except subprocess.TimeoutExpired as timeout:
        log.write_text(f"no end within {RUN_TIMEOUT_S:.0f} s\n{timeout.stdout}\n{timeout.stderr}")
        return time.monotonic() - started, f"did not end within {RUN_TIMEOUT_S:.0f} s", False
    seconds = time.monotonic() - started
    log.write_text(f"exit {result.returncode}\n{result.stdout}\n{result.stderr}")
    released = any(line.startswith("released ") for line in result.stderr.splitlines())
    if result.returncode != 0:
        return seconds, f"exit {result.returncode}: {result.stderr.strip()[-400:]}", released
    expected = expected_listing(simulator)
    if stored_state(path) != (expected, expected):
        return seconds, "the newest listing or current_numbers differ from the simulator", released
    return seconds, None, released


def term_loop(terms, simulator, env, rng, logs: Path, counts: TermCounts) -> None:
    path = Path(env["SYNTHFLOW_DUCKDB_PATH"])
    for number in range(1, terms + 1):
        label = f"SIGTERM {number}"
        change_state(simulator, rng)
        simulator.reset_stats()
        point = random_kill_point(rng, pages_per_run(simulator))
        started = time.monotonic()
        log = logs / f"term-{number}.log"
        status, ended = signal_at(env, simulator, point, log, signal.SIGTERM)
        output = log.read_text(errors="replace")
        if ended is None:
            counts.sigterms += 1
        if "Traceback" in output:
            outcome = "a traceback in its output"
        elif ended is not None and status == 0:
            counts.ended_before_the_signal += 1
            outcome = None
        elif ended is not None:
            outcome = ended
        elif status == 128 + signal.SIGTERM and "stopped by SIGTERM" in output:
            counts.stopped_with_exit_143 += 1
            outcome = None
        elif status == 0:
            counts.finished_its_work_exit_0 += 1
            outcome = None
        else:
            outcome = f"exit {status}"
        if outcome:
            counts.failures += 1
            print(f"  {label}: {outcome}; output:\n    " + output.strip()[-400:])
        unfinished, slots = count_left_behind(env, label)
        counts.runs_left_unfinished += unfinished
        counts.pool_slots_held += slots
        violations, mismatches, _ = check_stored(path, label)
        counts.whole_snapshot_violations += violations
        counts.history_mismatches += mismatches
        print(
            f"  {label}/{terms}: pages {point.pages}, delay {point.delay_s:.2f} s, "
            f"exit {status}, {time.monotonic() - started:.1f} s",
            flush=True,
        )


def contention_loop(pairs: int, seed: int, work: Path, counts: ContentionCounts) -> None:
    rng = random.Random(seed)
    with crash_simulator(seed=seed + 1) as simulator:
        env = command_env(simulator, work / "contention", work / "pycache")
        path = Path(env["SYNTHFLOW_DUCKDB_PATH"])
        for number in range(1, pairs + 1):
            change_state(simulator, rng)
            simulator.reset_stats()
            processes = [start_command(env, "snapshot") for _ in range(2)]
            deadline = time.monotonic() + RUN_TIMEOUT_S
            while simulator.stats.pages_served < 1 and time.monotonic() < deadline:
                if all(process.poll() is not None for process in processes):
                    break
                time.sleep(0.005)
            processes.append(start_command(env, "rebuild-history"))
            for process in processes:
                try:
                    _, stderr = process.communicate(timeout=RUN_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    _, stderr = process.communicate()
                if process.returncode != 0:
                    counts.failed_commands += 1
                    print(f"  round {number}: {process.args[3:]} exit {process.returncode}")
                    print("    " + stderr.strip()[-400:])
            counts.concurrent_rounds += 1
            violations, mismatches, _ = check_stored(path, f"round {number}")
            counts.whole_snapshot_violations += violations
            counts.history_mismatches += mismatches
            with duckdb.connect(str(path), read_only=True) as con:
                per_run = con.execute(
                    "SELECT run_id, count(*) FROM synthflow.snapshots GROUP BY run_id"
                ).fetchall()
            counts.runs_not_stored_exactly_once += sum(n != WORKSPACES for _, n in per_run)
            expected = expected_listing(simulator)
            counts.wrong_final_state += stored_state(path) != (expected, expected)
            unfinished, slots = count_left_behind(env, f"round {number}")
            counts.runs_left_unfinished += unfinished
            counts.pool_slots_held += slots
            print(f"  round {number}/{pairs}: {len(per_run)} runs stored", flush=True)


def start_command(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def table(title: str, counts: object, notes: tuple[str, ...] = ()) -> tuple[str, bool]:
    lines = [title]
    clean = True
    for item in fields(counts):
        value = getattr(counts, item.name)
        must_be_zero = item.name not in INFORMATIONAL
        clean &= not (must_be_zero and value)
        note = "must be 0" if must_be_zero else ""
        lines.append(f"  {item.name.replace('_', ' '):<38}{value:>6}  {note}")
    lines.extend(f"  {note}" for note in notes)
    return "\n".join(lines), clean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="snapshots to SIGKILL")
    parser.add_argument("--terms", type=int, default=10, help="snapshots to SIGTERM")
    parser.add_argument("--pairs", type=int, default=5, help="rounds of concurrent writers")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    args = parser.parse_args()
    kills, terms, contention = KillCounts(), TermCounts(), ContentionCounts()
    next_seconds: list[float] = []
    started = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="crash-bench-"))
    crash, logs = work / "crash", work / "logs"
    for directory in (crash, logs, work / "contention"):
        directory.mkdir()
    print(f"work directory {work}; DAGSTER_HOME {crash / 'dagster_home'}", flush=True)
    rng = random.Random(args.seed)
    with crash_simulator(seed=args.seed) as simulator:
        env = command_env(simulator, crash, work / "pycache")
        print(f"SIGKILL: {args.kills} runs (seed {args.seed})", flush=True)
        kill_loop(args.kills, simulator, env, rng, logs, kills, next_seconds)
        print(f"SIGTERM: {args.terms} runs, same instance and file", flush=True)
        term_loop(args.terms, simulator, env, rng, logs, terms)
    print(f"contention: {args.pairs} rounds", flush=True)
    contention_loop(args.pairs, args.seed, work, contention)

    seconds = (
        f"next run seconds: median {statistics.median(next_seconds):.1f}, "
        f"max {max(next_seconds):.1f} (limit {NEXT_RUN_LIMIT_S:.0f})"
        if next_seconds
        else "next run seconds: none"
    )
    tables = [
        table("crash_and_contention: SIGKILLed snapshots", kills, (seconds,)),
        table("crash_and_contention: SIGTERMed snapshots", terms),
        table("crash_and_contention: two snapshots and a rebuild-history at once", contention),
    ]
    for text, _ in tables:
        print(text)
    clean = all(ok for _, ok in tables)
    if clean and not args.keep:
        shutil.rmtree(work)
    else:
        print(f"kept {work}")
    verdict = "PASS" if clean else "FAIL"
    print(f"{verdict} in {time.monotonic() - started:.0f} s")
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
