"""How fast is `synthflow-numbers snapshot` at scale, next to dlt and next to what the API allows?

One command starts the bundled simulator with latency, page-cap and rate switches and runs,
alternating (project, dlt, project, dlt, ...), this project's `snapshot` and a dlt pipeline
(`benchmarks/dlt_numbers.py`: rest_api source, offset paginator, merge with the scd2
strategy, DuckDB, parallel extraction) over the same workspaces. Both run as real
subprocesses with a fresh DuckDB file per round; wall time and peak RSS come from `wait4`.
Every figure printed is the median of the alternated rounds of one run.

The bound is what the API allows: pages / rate budget, or pages x latency / concurrency,
whichever is larger. The fixed start-up (Python, imports, the Dagster instance and run, an
empty DuckDB file) is the median snapshot of one empty workspace, and is allowed on top of the
bound up to 5 s. For a case with a bound it is measured beside the case, a start-up round
alternated with each of its rounds: this machine's speed drifts by 10-20 % over minutes, and a
start-up measured minutes earlier would add that drift to the comparison. Such a case has 5
rounds, not 3: its verdict compares two medians within about a tenth of each other, and the
speed swings by more than that from one round to the next.

Cases (targets from the issue "A simple engine room"; the first five set like dlt: no client
rate limit, 16 requests in flight):
  big       1 x 50,000 numbers, page cap 100, 50 ms latency: >= 5x dlt, <= 1.5 x bound + start-up
  many      20 x 5,000, page cap 100, 50 ms: faster than dlt, <= 1.5 x bound + start-up
  rate      20 x 5,000, page cap 100, 50 ms, server budget 50 req/s (429 past it), the client
            set to 50/s: <= 1.15 x pages / 50 + start-up, no 429
  volume    100 x 10,000 (1,000,000), page size 1,000, no latency: >= 5x dlt, history included
  memory    1 x 200,000, page size 1,000: peak RSS of the snapshot process <= 500 MB
  breadth   1,000 x 10, 20 ms latency: one run, < 60 s
  defaults       big with no fetch settings at all: >= 4x dlt
  rate-defaults  rate with no fetch settings at all: <= 1.3 x pages / 50 + start-up, 429s at
                 most 2 % of requests

Run (dlt lives in the `bench` dependency group):

    uv run --group bench python benchmarks/snapshot_vs_dlt.py            # every case, 3-5 rounds
    uv run --group bench python benchmarks/snapshot_vs_dlt.py --quick    # smaller, 1 round
    uv run --group bench python benchmarks/snapshot_vs_dlt.py --only big --only volume
    uv run --group bench python benchmarks/snapshot_vs_dlt.py --only breadth --postgres

`--postgres` runs the project on the deployment's instance (deploy/dagster.yaml: PostgreSQL
storage) on a throwaway server from Debian's postgresql package, as the deployment tests do.

Children run with bytecode caching on (PYTHONPYCACHEPREFIX under the work directory): an
environment with PYTHONDONTWRITEBYTECODE=1 and no compiled bytecode in the virtualenv would
otherwise recompile every module of Dagster, pandas and dlt in every process, ~10 s of start-up
that no installed deployment pays. One warm-up run of each side fills that cache first (and
creates the Dagster instance every project run then shares, under DAGSTER_HOME).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import duckdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pipelines.synthflow.simulator import Simulator, demo_simulator  # noqa: E402
from tests.pg import PostgresServer, running_postgres  # noqa: E402

API_KEY = "made-up-benchmark-token"
STARTUP_CAP_S = 5.0
ROUNDS, BOUND_ROUNDS = 3, 5  # rounds per side; the second for a case judged against its bound
UNLIMITED_RATE = 100_000.0  # the client's budget when the API has no limit


@dataclass(frozen=True)
class Case:
    name: str
    workspaces: int
    numbers: int
    latency_s: float = 0.0
    page_cap: int | None = None
    server_rate: float | None = None
    page_size: int = 100
    concurrency: int = 16
    client_rate: float = UNLIMITED_RATE
    bound_factor: float | None = None  # total <= factor x bound + start-up
    min_speedup: float | None = None  # dlt / project >= this
    max_rss_mb: float | None = None
    max_seconds: float | None = None
    run_dlt: bool = True
    defaults: bool = False  # the project runs with no fetch settings (concurrency, rate: theirs)
    max_429_share: float = 0.0  # of the project's requests
    note: str = ""

    @property
    def pages(self) -> int:
        size = min(self.page_size, self.page_cap or self.page_size)
        return self.workspaces * max(1, math.ceil(self.numbers / size))

    @property
    def total(self) -> int:
        return self.workspaces * self.numbers

    @property
    def rate(self) -> float:
        """The rate that bounds the run: the server's budget when it has one, else ours."""
        return min(self.server_rate or math.inf, self.client_rate)

    @property
    def bound_s(self) -> float:
        return max(self.pages / self.rate, self.pages * self.latency_s / self.concurrency)

    def rounds(self, asked: int | None) -> int:
        if asked is not None:
            return asked
        return BOUND_ROUNDS if self.bound_factor is not None else ROUNDS

    def quick(self) -> Case:
        """A tenth of the data (at least a few pages per workspace), same switches."""
        workspaces = max(1, self.workspaces // 10) if self.workspaces > 20 else self.workspaces
        numbers = max(self.numbers // 10, min(self.numbers, 3 * self.page_size))
        return Case(**{**self.__dict__, "workspaces": workspaces, "numbers": numbers})


CASES = [
    Case(
        "big",
        workspaces=1,
        numbers=50_000,
        latency_s=0.05,
        page_cap=100,
        bound_factor=1.5,
        min_speedup=5.0,
        note="dlt pages one page at a time",
    ),
    Case(
        "many",
        workspaces=20,
        numbers=5_000,
        latency_s=0.05,
        page_cap=100,
        bound_factor=1.5,
        min_speedup=1.0,
    ),
    Case(
        "rate",
        workspaces=20,
        numbers=5_000,
        latency_s=0.05,
        page_cap=100,
        server_rate=50,
        client_rate=50,
        bound_factor=1.15,
        note="server answers 429 past 50 req/s",
    ),
    Case(
        "volume",
        workspaces=100,
        numbers=10_000,
        page_size=1_000,
        min_speedup=5.0,
        note="history included on both sides",
    ),
    Case("memory", workspaces=1, numbers=200_000, page_size=1_000, max_rss_mb=500),
    Case(
        "breadth",
        workspaces=1_000,
        numbers=10,
        latency_s=0.02,
        max_seconds=60,
    ),
    # FetchSettings' defaults, which the project runs with here: 8 in flight, a found rate of
    # at most 200 a second.
    Case(
        "defaults",
        workspaces=1,
        numbers=50_000,
        latency_s=0.05,
        page_cap=100,
        concurrency=8,
        client_rate=200,
        defaults=True,
        min_speedup=4.0,
        note="no fetch settings",
    ),
    Case(
        "rate-defaults",
        workspaces=20,
        numbers=5_000,
        latency_s=0.05,
        page_cap=100,
        server_rate=50,
        concurrency=8,
        client_rate=200,
        defaults=True,
        bound_factor=1.3,
        max_429_share=0.02,
        run_dlt=False,
        note="no fetch settings; server answers 429 past 50 req/s",
    ),
]


@dataclass
class Run:
    seconds: float
    rss_mb: float
    cpu_s: float
    requests: int
    rate_limited: int
    max_per_second: int
    rows: int
    history_rows: int


@dataclass
class Result:
    case: Case
    project: list[Run] = field(default_factory=list)
    dlt: list[Run] = field(default_factory=list)
    startup: list[Run] = field(default_factory=list)  # the project, one empty workspace

    def median(self, side: str, attribute: str = "seconds") -> float:
        runs = getattr(self, side)
        return statistics.median(getattr(run, attribute) for run in runs) if runs else math.nan

    def worst(self, side: str, attribute: str) -> float:
        runs = getattr(self, side)
        return max(getattr(run, attribute) for run in runs) if runs else math.nan


class BenchmarkError(Exception):
    """A side failed or stored something other than the whole listing."""


def child_env(work: Path, postgres: PostgresServer | None = None) -> dict[str, str]:
    """The children's environment: bytecode cached, and one persistent Dagster instance for
    every run (DAGSTER_HOME holding the project's dagster.yaml), as `dagster dev` and a
    deployment have; an in-memory instance would leave out every event write a user pays.
    With `postgres`, the deployment's instance (deploy/dagster.yaml) on that server."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SYNTHFLOW_", "DAGSTER_"))}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    dagster_home = work / "dagster_home"
    dagster_home.mkdir()
    instance = ROOT / "deploy" / "dagster.yaml" if postgres else ROOT / "dagster.yaml"
    shutil.copy(instance, dagster_home / "dagster.yaml")
    env["DAGSTER_HOME"] = str(dagster_home)
    if postgres:
        env |= postgres.dagster_env(postgres.create_database("benchmark"))
    return env


def measure(command: list[str], env: dict[str, str], log: Path) -> tuple[float, float, float]:
    """Run to the end; wall seconds, peak RSS (MB) and CPU seconds of that one process."""
    with log.open("wb") as out:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=out)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        raise BenchmarkError(f"{' '.join(command[:4])} exited {process.returncode}:\n{tail}")
    return seconds, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime


def run_project(case: Case, sim: Simulator, work: Path, env: dict[str, str]) -> Run:
    round_dir = Path(tempfile.mkdtemp(prefix="project-", dir=work))
    config = round_dir / "synthflow.yaml"
    config.write_text(
        ""
        if case.defaults
        else "fetch:\n"
        f"  page_size: {case.page_size}\n"
        f"  concurrency: {case.concurrency}\n"
        f"  requests_per_second: {case.client_rate:g}\n"
    )
    database = round_dir / "numbers.duckdb"
    env = env | {
        "SYNTHFLOW_BASE_URL": sim.base_url,
        "SYNTHFLOW_WORKSPACES": ",".join(sim.workspace_ids()),
        "SYNTHFLOW_API_KEY": API_KEY,
        "SYNTHFLOW_DUCKDB_PATH": str(database),
        "SYNTHFLOW_CONFIG": str(config),
    }
    counts = (
        "SELECT (SELECT count(*) FROM synthflow.number_snapshots), "
        "(SELECT count(*) FROM synthflow.number_history WHERE valid_to IS NULL)"
    )
    command = [sys.executable, "-m", "pipelines.cli", "snapshot"]
    return run_side(command, env, sim, round_dir, database, counts)


def run_dlt(case: Case, sim: Simulator, work: Path, env: dict[str, str]) -> Run:
    round_dir = Path(tempfile.mkdtemp(prefix="dlt-", dir=work))
    workspaces = round_dir / "workspaces"
    workspaces.write_text(",".join(sim.workspace_ids()))
    database = round_dir / "dlt.duckdb"
    command = [
        sys.executable,
        str(ROOT / "benchmarks" / "dlt_numbers.py"),
        "--base-url",
        sim.base_url,
        "--workspaces-file",
        str(workspaces),
        "--api-key",
        API_KEY,
        "--page-size",
        str(min(case.page_size, case.page_cap or case.page_size)),
        "--workers",
        str(case.concurrency),
        "--database",
        str(database),
        "--pipelines-dir",
        str(round_dir / "pipelines"),
    ]
    counts = (
        "SELECT count(*), count(*) FILTER (WHERE _dlt_valid_to IS NULL) FROM synthflow_dlt.numbers"
    )
    return run_side(command, env, sim, round_dir, database, counts)


def run_side(
    command: list[str],
    env: dict[str, str],
    sim: Simulator,
    round_dir: Path,
    database: Path,
    counts: str,
) -> Run:
    """Run one side's command and read back what it stored: (rows, current history rows)."""
    sim.reset_stats()
    seconds, rss, cpu = measure(command, env, round_dir / "log")
    stats = sim.stats
    with duckdb.connect(str(database), read_only=True) as con:
        try:
            rows, current = con.execute(counts).fetchone()
        except duckdb.CatalogException:  # no rows at all: dlt creates no table
            rows = current = 0
    shutil.rmtree(round_dir, ignore_errors=True)
    return Run(
        seconds,
        rss,
        cpu,
        stats.requests,
        stats.rate_limited,
        stats.max_requests_in_any_second,
        rows,
        current,
    )


def check_complete(side: str, case: Case, run: Run) -> None:
    if run.rows != case.total or run.history_rows != case.total:
        raise BenchmarkError(
            f"{case.name}/{side}: stored {run.rows} rows and {run.history_rows} current history "
            f"rows, expected {case.total} of each"
        )


def simulator_for(case: Case, seed: int = 7) -> Simulator:
    return demo_simulator(
        seed=seed,
        workspaces=case.workspaces,
        numbers_per_workspace=case.numbers,
        latency_s=case.latency_s,
        page_size_cap=case.page_cap,
        requests_per_second=case.server_rate,
    )


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


EMPTY = Case("startup", workspaces=1, numbers=0)


def run_case(case: Case, rounds: int, work: Path, env: dict[str, str]) -> Result:
    result = Result(case)
    started = time.perf_counter()
    with simulator_for(case) as sim, simulator_for(EMPTY) as empty:
        say(
            f"[{case.name}] simulator ready in {time.perf_counter() - started:.1f} s: "
            f"{case.workspaces} x {case.numbers:,} numbers, {case.pages:,} pages"
        )
        sides: list[tuple[str, Case, Simulator, Callable[..., Run]]] = [
            ("project", case, sim, run_project)
        ]
        if case.run_dlt:
            sides.append(("dlt", case, sim, run_dlt))
        if case.bound_factor is not None:
            sides.append(("startup", EMPTY, empty, run_project))
        for index in range(rounds):
            for side, side_case, side_sim, runner in sides:
                run = runner(side_case, side_sim, work, env)
                check_complete(side, side_case, run)
                getattr(result, side).append(run)
                say(
                    f"[{case.name}] round {index + 1}/{rounds} {side:7s} {run.seconds:6.2f} s, "
                    f"cpu {run.cpu_s:6.2f} s, rss {run.rss_mb:5.0f} MB, {run.requests} req, "
                    f"{run.rate_limited} x 429, max {run.max_per_second} req/s"
                )
    return result


def measure_startup(rounds: int, work: Path, env: dict[str, str]) -> tuple[float, float]:
    """Median seconds of a snapshot (and of the dlt pipeline) of one empty workspace."""
    result = run_case(EMPTY, rounds, work, env)
    return result.median("project"), result.median("dlt")


def verdicts(result: Result) -> list[tuple[str, str, bool]]:
    """(target, measured against it, passed) for each target of the case."""
    case = result.case
    project = result.median("project")
    out = []
    if case.bound_factor is not None:
        startup = result.median("startup")
        limit = case.bound_factor * case.bound_s + min(startup, STARTUP_CAP_S)
        out.append(
            (
                f"<= {case.bound_factor:g} x bound + start-up {startup:.2f} s = {limit:.2f} s",
                f"{project:.2f} s ({project / limit:.0%} of it)",
                project <= limit,
            )
        )
    if case.min_speedup is not None and result.dlt:
        speedup = result.median("dlt") / project
        out.append(
            (
                f"dlt / project >= {case.min_speedup:g}",
                f"{speedup:.2f}",
                speedup >= case.min_speedup,
            )
        )
    if case.server_rate is not None:
        share = max(run.rate_limited / run.requests for run in result.project)
        limited = max(run.rate_limited for run in result.project)
        busiest = max(run.max_per_second for run in result.project)
        out.append(
            (
                f"429s <= {case.max_429_share:.0%} of requests",
                f"{limited} x 429 ({share:.1%}), max {busiest} requests in any second",
                share <= case.max_429_share,
            )
        )
    if case.max_rss_mb is not None:
        rss = result.worst("project", "rss_mb")
        out.append(
            (
                f"peak RSS <= {case.max_rss_mb:g} MB",
                f"{rss:.0f} MB (worst round)",
                rss <= case.max_rss_mb,
            )
        )
    if case.max_seconds is not None:
        out.append(
            (f"one run < {case.max_seconds:g} s", f"{project:.2f} s", project < case.max_seconds)
        )
    return out


def _figures(runs: list[Run], attribute: str, unit: str) -> str:
    return ", ".join(f"{getattr(run, attribute):.2f}{unit}" for run in runs)


def report(results: list[Result], startup: tuple[float, float], load: str, quick: bool) -> bool:
    project_startup, dlt_startup = startup
    print()
    if quick:
        print("--quick: a tenth of the data. A smoke test: the targets are for the full sizes.")
    print(f"Rounds alternated per side, medians. {os.cpu_count()} cores; {load}.")
    print(
        f"start-up (one empty workspace): project {project_startup:.2f} s, dlt "
        f"{dlt_startup:.2f} s; at most {STARTUP_CAP_S:g} s: "
        f"{'PASS' if project_startup <= STARTUP_CAP_S else 'FAIL'}. A case with a bound is "
        "allowed the start-up measured beside it."
    )
    print()
    header = (
        f"{'case':8s} {'pages':>6s} {'bound s':>8s} {'project s':>9s} {'dlt s':>7s} "
        f"{'dlt/proj':>8s} {'proj RSS':>8s} {'dlt RSS':>8s}"
    )
    print(header)
    print("-" * len(header))
    for result in results:
        case = result.case
        project, dlt = result.median("project"), result.median("dlt")
        bounded = case.latency_s > 0 or case.server_rate is not None
        dlt_rss = f"{result.median('dlt', 'rss_mb'):.0f}M" if result.dlt else "-"
        print(
            f"{case.name:8s} {case.pages:6d} "
            f"{f'{case.bound_s:.2f}' if bounded else '-':>8s} {project:9.2f} "
            f"{f'{dlt:.2f}' if result.dlt else '-':>7s} "
            f"{f'{dlt / project:.2f}' if result.dlt else '-':>8s} "
            f"{result.median('project', 'rss_mb'):7.0f}M "
            f"{dlt_rss:>8s}"
        )
    print()
    passed_all = True
    for result in results:
        case = result.case
        targets = verdicts(result)
        passed_all &= all(ok for _, _, ok in targets)
        for target, measured, ok in targets:
            print(f"{'PASS' if ok else 'FAIL'}  {case.name:8s} {target}: {measured}")
    print()
    for result in results:
        case = result.case
        print(
            f"{case.name}: {case.workspaces:,} x {case.numbers:,} numbers, page size "
            f"{case.page_size}{f' (server cap {case.page_cap})' if case.page_cap else ''}, "
            f"latency {case.latency_s * 1000:g} ms, server rate "
            f"{f'{case.server_rate:g}/s' if case.server_rate else 'unlimited'}; project "
            f"fetch.concurrency {case.concurrency}, requests_per_second {case.client_rate:g}; "
            f"{len(result.project)} round(s)"
            + (f"; dlt {case.concurrency} extract workers" if result.dlt else "; dlt not run")
            + (f"; {case.note}" if case.note else "")
        )
        print(
            f"    project s: {_figures(result.project, 'seconds', '')} "
            f"(cpu {_figures(result.project, 'cpu_s', '')})"
        )
        if result.dlt:
            print(
                f"    dlt s:     {_figures(result.dlt, 'seconds', '')} "
                f"(cpu {_figures(result.dlt, 'cpu_s', '')})"
            )
        if result.startup:
            print(f"    start-up s: {_figures(result.startup, 'seconds', '')}")
    return passed_all


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the data, one round")
    parser.add_argument("--only", action="append", choices=[c.name for c in CASES], metavar="CASE")
    parser.add_argument(
        "--rounds",
        type=int,
        help=f"rounds per side (default {ROUNDS}, {BOUND_ROUNDS} for a case with a bound; 1 with "
        "--quick)",
    )
    parser.add_argument("--concurrency", type=int, help="override fetch.concurrency everywhere")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--skip-dlt", action="store_true", help="project only (for tuning)")
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="the project on the deployment's PostgreSQL instance (deploy/dagster.yaml), on a "
        "throwaway server from Debian's postgresql package",
    )
    args = parser.parse_args()
    asked = args.rounds or (1 if args.quick else None)
    cases = [case for case in CASES if not args.only or case.name in args.only]
    if args.quick:
        cases = [case.quick() for case in cases]
    if args.concurrency:
        cases = [Case(**{**case.__dict__, "concurrency": args.concurrency}) for case in cases]
    if args.skip_dlt:
        cases = [Case(**{**case.__dict__, "run_dlt": False}) for case in cases]

    work = Path(tempfile.mkdtemp(prefix="snapshot-vs-dlt-"))
    load_before = "load average {:.2f} {:.2f} {:.2f} before".format(*os.getloadavg())
    try:
        with contextlib.ExitStack() as stack:
            postgres = stack.enter_context(running_postgres()) if args.postgres else None
            env = child_env(work, postgres)
            say(f"work directory {work}; warming the bytecode cache")
            warm = Case("warm-up", workspaces=1, numbers=10)
            run_case(warm, 1, work, env)
            startup = measure_startup(max(ROUNDS, asked or 0), work, env)
            results = [run_case(case, case.rounds(asked), work, env) for case in cases]
        load = load_before + ", {:.2f} {:.2f} {:.2f} after".format(*os.getloadavg())
        passed = report(results, startup, load, args.quick)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
