"""The demo: a simulated Synthflow whose numbers change between snapshots, then the report.

Every kind of change shows up: numbers assigned, released, removed, added, re-added, a SID
change, a number moved between workspaces and one workspace emptied. Needs no key and no
network; the snapshots run the same Dagster job a schedule runs.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import yaml
from rich.console import Console
from rich.markup import escape

from pipelines.config import DUCKLAKE_VARIABLES, Settings, load_settings
from pipelines.report import build_report
from pipelines.snapshot import WorkspaceOutcome
from pipelines.synthflow.simulator import PhoneNumber, Simulator, demo_simulator
from pipelines.warehouse.connection import connect

DEMO_TOKEN = "demo-token-not-a-real-key"
DEMO_NAMES = ("Acme Support US", "Acme Sales Europe", "Acme Trial")


def _first_changes(simulator: Simulator) -> tuple[list[str], PhoneNumber]:
    """Assign, release, change a SID, remove, add and move; returns the removed number."""
    first, second, _ = simulator.workspace_ids()
    free = [n for n in simulator.numbers(first) if n.is_available]
    taken = [n for n in simulator.numbers(first) if not n.is_available]
    moved = simulator.numbers(second)[0]
    simulator.set_available(first, free[0].number, False)
    simulator.set_available(first, taken[0].number, True)
    simulator.set_sid(first, free[1].number, None)
    simulator.remove_number(first, free[2].number)
    simulator.add_number(second, simulator.new_number("GB", is_available=True))
    simulator.move_number(moved.number, second, first)
    return [
        f"assigned {free[0].number} and released {taken[0].number} in {first}",
        f"changed the SID of {free[1].number} and removed {free[2].number}",
        f"added a GB number to {second} and moved {moved.number} from {second} to {first}",
    ], free[2]


def _second_changes(simulator: Simulator, removed: PhoneNumber) -> list[str]:
    """Re-add the removed number, flip one in the second workspace, empty the third."""
    first, second, third = simulator.workspace_ids()
    flipped = simulator.numbers(second)[1]
    simulator.add_number(first, removed)
    simulator.set_available(second, flipped.number, not flipped.is_available)
    simulator.clear_workspace(third)
    return [
        f"re-added {removed.number} to {first}",
        f"{'assigned' if flipped.is_available else 'released'} {flipped.number} in {second}",
        f"emptied {third}",
    ]


def run_demo(
    database: Path,
    run_snapshots: Callable[[Settings], list[WorkspaceOutcome]],
    stdout: Console,
    stderr: Console,
) -> int:
    """Three snapshots with changes between them, then the report; returns the exit code.

    The database is replaced, so only a synthflow database (an earlier demo's) is: a folder or
    any other file there is refused (DatabaseUnusableError), left as it was."""
    if database.exists() or database.is_symlink():
        with connect(database, read_only=True):
            pass
    for stale in (database, database.with_name(database.name + ".wal")):
        stale.unlink(missing_ok=True)
    with (
        demo_simulator(
            seed=7, workspaces=3, numbers_per_workspace=40, api_key=DEMO_TOKEN
        ) as simulator,
        tempfile.TemporaryDirectory(prefix="synthflow-demo-") as folder,
    ):
        config = Path(folder) / "synthflow.yaml"
        named = zip(simulator.workspace_ids(), DEMO_NAMES, strict=True)
        config.write_text(yaml.safe_dump({"workspaces": [{"id": i, "name": n} for i, n in named]}))
        for variable in ("SYNTHFLOW_WORKSPACES", *DUCKLAKE_VARIABLES):  # the demo's own file
            os.environ.pop(variable, None)
        os.environ.update(
            {
                "SYNTHFLOW_CONFIG": str(config),
                "SYNTHFLOW_BASE_URL": simulator.base_url,
                "SYNTHFLOW_API_KEY": DEMO_TOKEN,
                "SYNTHFLOW_DUCKDB_PATH": str(database),
            }
        )
        settings = load_settings()
        stderr.print(f"Simulator at {simulator.base_url}; database {escape(str(database))}")
        removed = None
        for round_number in range(1, 4):
            stderr.print(f"[bold]Snapshot {round_number}[/]")
            outcomes = run_snapshots(settings)
            if not all(outcome.succeeded for outcome in outcomes):
                stderr.print("[red]the demo snapshot failed[/]")
                return 1
            if round_number == 1:
                lines, removed = _first_changes(simulator)
            elif removed is not None and round_number == 2:
                lines = _second_changes(simulator, removed)
            else:
                lines = []
            for line in lines:
                stderr.print(f"  simulator: {line}")
    with connect(database, read_only=True) as con:
        stdout.print(build_report(con))
    stderr.print(
        f"Query it yourself: SYNTHFLOW_DUCKDB_PATH={escape(str(database))} "
        "uv run synthflow-numbers query 'SELECT * FROM synthflow.current_numbers'"
    )
    return 0
