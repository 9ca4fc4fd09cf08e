"""Does a killed `snapshot` ever leave the DuckDB file broken, and do concurrent writers take turns?

The loop of tests/test_crash_safety.py, many more times. A simulator (3 workspaces of 240
numbers, 10 ms latency) changes its numbers before every run. Each kill starts
`python -m pipelines.cli snapshot` and SIGKILLs it at a seeded random point: half of them
after a random number of pages served, half after the last page plus a random delay of up to
150 ms (storing listings, bringing history up to date, running checks). After each kill:
- whole-snapshot violations: a `synthflow.snapshots` row whose number rows are not exactly
  `total_records` = `row_count`, or number rows without their snapshots row;
- history mismatches: `number_history` or `number_changes` differ from `rebuild_history`;
- next-run failures: the next `snapshot` does not exit 0, or does not store the simulator's
  state exactly (newest listing and `current_numbers`).

Contention (`--pairs`): two `snapshot` commands started at once plus `rebuild-history` once
one of them reads; every command must exit 0, each run's snapshots be stored once and whole,
history equal a rebuild and the newest listing equal the simulator's state.

Every count in the table except "ended before the kill" must be 0; the exit status is 1
otherwise. Each kill costs two runs of the command (start-up included): about 10-20 s.

Run: .venv/bin/python benchmarks/crash_and_contention.py [--kills N] [--pairs M] [--seed S]
"""

from __future__ import annotations

import argparse
import random
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
    start_snapshot,
    stored_state,
)


@dataclass
class CrashCounts:
    kills: int = 0
    ended_before_the_kill: int = 0
    killed_with_no_workspace_stored: int = 0
    killed_with_some_workspaces_stored: int = 0
    killed_with_every_workspace_stored: int = 0
    whole_snapshot_violations: int = 0
    history_mismatches: int = 0
    next_run_failures: int = 0


@dataclass
class ContentionCounts:
    concurrent_rounds: int = 0
    failed_commands: int = 0
    whole_snapshot_violations: int = 0
    history_mismatches: int = 0
    runs_not_stored_exactly_once: int = 0
    wrong_final_state: int = 0


def random_kill_point(rng: random.Random, pages: int) -> KillPoint:
    if rng.random() < 0.5:
        return KillPoint(rng.randint(1, pages))
    return KillPoint(pages, delay_s=rng.uniform(0.0, 0.15))


def next_run_stores_exactly(env: dict[str, str], simulator, path: Path) -> str | None:
    """None when the next snapshot exits 0 and stores the simulator's state; else why not."""
    result = run_snapshot(env)
    if result.returncode != 0:
        return f"exit {result.returncode}: {result.stderr.strip()[-400:]}"
    expected = expected_listing(simulator)
    if stored_state(path) != (expected, expected):
        return "the newest listing or current_numbers differ from the simulator"
    return None


def crash_loop(kills: int, seed: int, directory: Path, counts: CrashCounts) -> None:
    rng = random.Random(seed)
    with crash_simulator(seed=seed) as simulator:
        env = cli_env(simulator, directory)
        path = Path(env["SYNTHFLOW_DUCKDB_PATH"])
        log = directory / "killed.log"
        stored_before = 0
        for number in range(1, kills + 1):
            change_state(simulator, rng)
            simulator.reset_stats()
            point = random_kill_point(rng, pages_per_run(simulator))
            started = time.monotonic()
            try:
                kill_at(start_snapshot(env, log), simulator, point, log)
            except AssertionError as ended:
                counts.ended_before_the_kill += 1
                print(f"  kill {number}: not killed ({str(ended).splitlines()[0]})")
            else:
                counts.kills += 1
            after = inspect_after_crash(path)
            counts.whole_snapshot_violations += len(after.whole_snapshot_violations)
            counts.history_mismatches += len(after.history_mismatches)
            stored_by_the_killed_run = after.snapshots - stored_before
            if stored_by_the_killed_run == 0:
                counts.killed_with_no_workspace_stored += 1
            elif stored_by_the_killed_run < WORKSPACES:
                counts.killed_with_some_workspaces_stored += 1
            else:
                counts.killed_with_every_workspace_stored += 1
            for problem in after.whole_snapshot_violations + after.history_mismatches:
                print(f"  kill {number}: {problem}")
            change_state(simulator, rng)
            failure = next_run_stores_exactly(env, simulator, path)
            if failure:
                counts.next_run_failures += 1
                print(f"  kill {number}: next run: {failure}")
            with duckdb.connect(str(path), read_only=True) as con:
                stored_before = con.execute("SELECT count(*) FROM synthflow.snapshots").fetchone()[
                    0
                ]
            print(
                f"  kill {number}/{kills}: pages {point.pages}, delay {point.delay_s:.2f} s, "
                f"{stored_by_the_killed_run} of its workspaces stored, "
                f"{time.monotonic() - started:.1f} s",
                flush=True,
            )


def contention_loop(pairs: int, seed: int, directory: Path, counts: ContentionCounts) -> None:
    rng = random.Random(seed)
    with crash_simulator(seed=seed + 1) as simulator:
        env = cli_env(simulator, directory)
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
            after = inspect_after_crash(path)
            counts.whole_snapshot_violations += len(after.whole_snapshot_violations)
            counts.history_mismatches += len(after.history_mismatches)
            with duckdb.connect(str(path), read_only=True) as con:
                per_run = con.execute(
                    "SELECT run_id, count(*) FROM synthflow.snapshots GROUP BY run_id"
                ).fetchall()
            counts.runs_not_stored_exactly_once += sum(n != WORKSPACES for _, n in per_run)
            expected = expected_listing(simulator)
            counts.wrong_final_state += stored_state(path) != (expected, expected)
            print(f"  round {number}/{pairs}: {len(per_run)} runs stored", flush=True)


def start_command(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def table(title: str, counts: object, informational: set[str]) -> tuple[str, bool]:
    lines = [title]
    clean = True
    for item in fields(counts):
        value = getattr(counts, item.name)
        must_be_zero = item.name not in informational
        clean &= not (must_be_zero and value)
        note = "must be 0" if must_be_zero else ""
        lines.append(f"  {item.name.replace('_', ' '):<38}{value:>6}  {note}")
    return "\n".join(lines), clean


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="snapshots to SIGKILL")
    parser.add_argument("--pairs", type=int, default=5, help="rounds of concurrent writers")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    crash, contention = CrashCounts(), ContentionCounts()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="crash-bench-") as name:
        (Path(name) / "crash").mkdir()
        (Path(name) / "contention").mkdir()
        print(f"crash loop: {args.kills} kills (seed {args.seed})", flush=True)
        crash_loop(args.kills, args.seed, Path(name) / "crash", crash)
        print(f"contention: {args.pairs} rounds", flush=True)
        contention_loop(args.pairs, args.seed, Path(name) / "contention", contention)
    crash_table, crash_clean = table(
        "crash_and_contention: SIGKILLed snapshots",
        crash,
        {name for name in vars(crash) if name.startswith(("kill", "ended"))},
    )
    contention_table, contention_clean = table(
        "crash_and_contention: two snapshots and a rebuild-history at once",
        contention,
        {"concurrent_rounds"},
    )
    print(crash_table)
    print(contention_table)
    verdict = "PASS" if crash_clean and contention_clean else "FAIL"
    print(f"{verdict} in {time.monotonic() - started:.0f} s")
    return 0 if verdict == "PASS" else 1


if __name__ == "__main__":
    raise SystemExit(main())
