"""How does a DuckLake warehouse compare with the file, and do four writers beat one?

volume   100 workspaces x 10,000 numbers, page size 1,000, no latency, one `snapshot` into a
         fresh warehouse: the file on DuckDB 2 (the default environment), the file on DuckDB
         1.5.5 and a DuckLake (both in the `ducklake` extra's environment), alternated.
writers  4 workspaces x 25,000 numbers, page size 1,000, 50 ms a request: one `snapshot` of all
         four against four `snapshot`s of one workspace each started together, on a fresh
         DuckLake each round (the `duckdb` pool's limit raised to 4, as docs/deployment.md says).

Every child runs as a user runs it: DAGSTER_HOME holding the project's dagster.yaml. The lake's
catalog is a throwaway PostgreSQL server from Debian's packages. Each round is checked: every
number stored once, one open history version per number. Prints medians and ratios.

Run (after `uv sync` and `UV_PROJECT_ENVIRONMENT=.venv-ducklake uv sync --extra ducklake`):
    .venv/bin/python benchmarks/ducklake.py [--rounds 3] [--only volume|writers]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from snapshot_vs_dlt import API_KEY, child_env, measure, say  # noqa: E402

from pipelines.synthflow.simulator import Simulator, demo_simulator  # noqa: E402
from tests.pg import PostgresServer, running_postgres  # noqa: E402

DEFAULT_PYTHON = ROOT / ".venv" / "bin" / "python"  # DuckDB 2
LAKE_PYTHON = ROOT / ".venv-ducklake" / "bin" / "python"  # DuckDB 1.5.5 and the extensions
COUNTS = """
SELECT (SELECT count(*) FROM synthflow.number_snapshots),
       (SELECT count(*) FROM synthflow.number_history WHERE valid_to IS NULL)
"""
CHECK = """
import sys
from pipelines.config import load_settings
from pipelines.warehouse.connection import connect
with connect(load_settings().warehouse, read_only=True) as con:
    print(*con.execute(sys.argv[1]).fetchone())
"""


class Warehouses:
    """A fresh warehouse per round: a file in the work folder, or a lake on the server."""

    def __init__(self, work: Path, server: PostgresServer) -> None:
        self.work, self.server = work, server

    def file(self) -> dict[str, str]:
        return {"SYNTHFLOW_DUCKDB_PATH": str(self.work / f"{uuid.uuid4().hex}.duckdb")}

    def lake(self) -> dict[str, str]:
        name = self.server.create_database(f"lake_{uuid.uuid4().hex[:12]}")
        return {
            "SYNTHFLOW_DUCKLAKE_CATALOG": f"dbname={name} host={self.server.host} "
            f"port={self.server.port} user={self.server.user}",
            "SYNTHFLOW_DUCKLAKE_DATA_PATH": str(self.work / name),
            "PGPASSWORD": self.server.password,
        }


def snapshot_env(base: dict[str, str], sim: Simulator, workspaces: list[str], work: Path) -> dict:
    config = work / "synthflow.yaml"
    config.write_text(  # as the volume case of snapshot_vs_dlt.py: no client rate limit
        "fetch:\n  page_size: 1000\n  concurrency: 16\n  requests_per_second: 100000\n"
    )
    return base | {
        "SYNTHFLOW_BASE_URL": sim.base_url,
        "SYNTHFLOW_WORKSPACES": ",".join(workspaces),
        "SYNTHFLOW_API_KEY": API_KEY,
        "SYNTHFLOW_CONFIG": str(config),
    }


def checked(python: Path, env: dict[str, str], expected: int) -> None:
    done = subprocess.run(
        [str(python), "-c", CHECK, COUNTS], env=env, cwd=ROOT, capture_output=True, text=True
    )
    if done.stdout.split() != [str(expected)] * 2:
        raise SystemExit(f"stored {done.stdout.strip() or done.stderr[-800:]}, expected {expected}")


def volume(rounds: int, work: Path, base: dict[str, str], warehouses: Warehouses) -> dict:
    sides = {
        "file, DuckDB 2": (DEFAULT_PYTHON, warehouses.file),
        "file, DuckDB 1.5.5": (LAKE_PYTHON, warehouses.file),
        "DuckLake, DuckDB 1.5.5": (LAKE_PYTHON, warehouses.lake),
    }
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    with demo_simulator(seed=7, workspaces=100, numbers_per_workspace=10_000) as sim:
        env = snapshot_env(base, sim, sim.workspace_ids(), work)
        for index in range(rounds):
            for side, (python, warehouse) in sides.items():
                side_env = env | warehouse()
                wall, rss, _ = measure(
                    [str(python), "-m", "pipelines.cli", "snapshot"], side_env, work / "log"
                )
                checked(python, side_env, 1_000_000)
                seconds[side].append(wall)
                say(f"[volume] round {index + 1}/{rounds} {side:24s} {wall:6.2f} s, {rss:.0f} MB")
    return seconds


def writers(rounds: int, work: Path, base: dict[str, str], warehouses: Warehouses) -> dict:
    seconds: dict[str, list[float]] = {"1 writer, 4 workspaces": [], "4 writers, 1 each": []}
    with demo_simulator(seed=11, workspaces=4, numbers_per_workspace=25_000, latency_s=0.05) as sim:
        ids = sim.workspace_ids()
        for index in range(rounds):
            for side in seconds:
                lake = warehouses.lake()
                groups = [ids] if side.startswith("1 ") else [[one] for one in ids]
                started = time.perf_counter()
                children = [
                    subprocess.Popen(
                        [str(LAKE_PYTHON), "-m", "pipelines.cli", "snapshot"],
                        env=snapshot_env(base, sim, group, work) | lake,
                        cwd=ROOT,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.PIPE,
                    )
                    for group in groups
                ]
                for child in children:
                    if child.wait() != 0:
                        raise SystemExit(child.stderr.read().decode()[-2000:])
                wall = time.perf_counter() - started
                checked(LAKE_PYTHON, snapshot_env(base, sim, ids, work) | lake, 100_000)
                seconds[side].append(wall)
                say(f"[writers] round {index + 1}/{rounds} {side:24s} {wall:6.2f} s")
    return seconds


def report(case: str, seconds: dict[str, list[float]]) -> None:
    first = statistics.median(next(iter(seconds.values())))
    print(f"\n{case}: medians of {len(next(iter(seconds.values())))} alternated rounds")
    for side, figures in seconds.items():
        median = statistics.median(figures)
        rounds = ", ".join(f"{figure:.2f}" for figure in figures)
        print(f"  {side:24s} {median:7.2f} s  ({median / first:.2f}x the first; {rounds})")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=["volume", "writers"])
    args = parser.parse_args()
    for python in (DEFAULT_PYTHON, LAKE_PYTHON):
        if not python.exists():
            raise SystemExit(f"{python} is missing: see this script's docstring")
    work = Path(tempfile.mkdtemp(prefix="ducklake-bench-"))
    try:
        with running_postgres() as server:
            base = child_env(work)
            subprocess.run(  # several snapshot steps at once, as on a DuckLake deployment
                [
                    str(DEFAULT_PYTHON),
                    "-m",
                    "dagster",
                    "instance",
                    "concurrency",
                    "set",
                    "duckdb",
                    "4",
                ],
                env=base,
                check=True,
                capture_output=True,
            )
            warehouses = Warehouses(work, server)
            for name, case in (("volume", volume), ("writers", writers)):
                if args.only in (None, name):
                    report(name, case(args.rounds, work, base, warehouses))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
