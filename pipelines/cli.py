"""The `synthflow-numbers` command: snapshot, demo, simulate, report, query, export and
rebuild-history.

Results go to stdout, messages for people to stderr. Known failures (bad configuration, a
locked database, a workspace that failed) end with a one-paragraph message and a non-zero
exit; a stack trace only with --debug.
"""

from __future__ import annotations

import argparse
import fcntl
import gc
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipelines.interrupts import Interrupted, end_on_signals
from pipelines.user_errors import UserError

# The command imports what a subcommand needs when it runs: `--help` and the reading commands
# start without Dagster, the HTTP client or the Arrow stack.
if TYPE_CHECKING:
    from pipelines.config import Settings
    from pipelines.snapshot import WorkspaceOutcome

# Piped output is not cut to 80 columns: tables stay whole for scripts and logs.
stdout = Console(width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


SIMULATED_KEY = "simulated-token"  # the one key `simulate` accepts: made up, printed for use


class CommandError(UserError):
    """A failure of the command itself (an output it cannot write, a port it cannot use)."""


class RichProgress:
    """The run's progress (`pipelines.snapshot.Progress`'s hooks): a bar on stderr and a line
    per workspace as it finishes."""

    def __init__(self) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self.outcomes: list[WorkspaceOutcome] = []
        self._bar = Progress(
            TextColumn("snapshot"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=stderr,
            transient=True,
        )
        self._task = None

    def started(self, workspace_ids: list[str]) -> None:
        self._bar.start()
        self._task = self._bar.add_task("workspaces", total=len(workspace_ids))

    def finished(self, outcome: WorkspaceOutcome) -> None:
        self.outcomes.append(outcome)
        if outcome.succeeded and outcome.snapshot:
            self._bar.console.print(
                f"[green]stored[/] {escape(outcome.workspace.label)}: "
                f"{_count(outcome.snapshot.row_count, 'number', 'numbers')} in "
                f"{_count(outcome.snapshot.page_count, 'page', 'pages')}"
            )
        else:
            self._bar.console.print(f"[red]failed[/] {escape(outcome.workspace.label)}")
        self._bar.advance(self._task)
        if self._bar.finished:
            self._bar.stop()


@contextmanager
def dagster_instance():
    """The instance of DAGSTER_HOME when set (runs show in that UI), else a throwaway one.

    Opening it is serialized across processes: commands started together on a fresh
    DAGSTER_HOME would otherwise race to create its storage ("table ... already exists").
    """
    import dagster as dg

    home = os.environ.get("DAGSTER_HOME")
    if not home:
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance
        return
    Path(home).mkdir(parents=True, exist_ok=True)
    with open(Path(home) / ".synthflow-instance.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        instance = dg.DagsterInstance.get()
        fcntl.flock(lock, fcntl.LOCK_UN)
    with instance:
        yield instance


def run_snapshot_job(settings: Settings, debug: bool = False) -> list[WorkspaceOutcome]:
    """Run the project's Dagster job over the given workspaces, as the schedule does."""
    import dagster as dg

    from pipelines.definitions import SNAPSHOT_JOB, build_definitions
    from pipelines.defs.dead_runs import PROCESS_TAG, process_identity, release_dead_runs
    from pipelines.defs.schedules import all_partitions_tags

    progress = RichProgress()
    defs = build_definitions(settings, progress)
    job = defs.resolve_job_def(SNAPSHOT_JOB)
    partitions = dg.StaticPartitionsDefinition(settings.workspace_ids)
    log_level = "DEBUG" if debug else "CRITICAL"
    # What is loaded by now (Dagster, pandas, Arrow) leaves Python's full collections: a full
    # pass over it stalled the event loop 90-150 ms, and requests that left late after their
    # budget slot reached a 50/s server within one second with later ones (a 429 in one of five
    # rounds of benchmarks/snapshot_vs_dlt.py's rate case without this).
    gc.freeze()
    with dagster_instance() as instance:
        for released in release_dead_runs(instance):
            stderr.print(f"released {released}", highlight=False)
        result = job.execute_in_process(
            instance=instance,
            tags={**all_partitions_tags(partitions), PROCESS_TAG: process_identity()},
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            raise_on_error=False,
        )
    if not result.success and len(progress.outcomes) < len(settings.workspaces):
        error = _step_error(result)
        if error is not None and (interrupted := _interruption(error)) is not None:
            raise interrupted
        raise CommandError(f"the snapshot run failed: {_root_message(error)}")
    return progress.outcomes


def _step_error(result):
    """The error of the failed step, as Dagster recorded it (None when no step failed)."""
    failure = next((event for event in result.all_events if event.is_step_failure), None)
    return failure.step_failure_data.error if failure else None


def _chain(error):
    while error is not None:
        yield error
        error = error.cause or error.context


def _interruption(error) -> KeyboardInterrupt | None:
    """The interruption that failed the step, if one did: ours (`Interrupted`, which names its
    signal) while listings are read, Dagster's own for a signal at any other point of the step
    (it does not say which signal; reported as Ctrl-C)."""
    for link in _chain(error):
        if link.cls_name == "Interrupted":
            return Interrupted(signal.Signals[link.message.split(": ")[-1].strip()])
        if link.cls_name in ("DagsterExecutionInterruptedError", "KeyboardInterrupt"):
            return KeyboardInterrupt()
    return None


def _root_message(error) -> str:
    """The message at the bottom of a failed step, without Dagster's wrapping."""
    if error is None:
        return "see the Dagster logs (--debug)"
    *_, root = _chain(error)
    return root.message.split(": ", 1)[-1].strip()


def summary_table(outcomes: Sequence[WorkspaceOutcome]) -> Table:
    table = Table(title="Snapshot summary", title_justify="left", header_style="bold")
    for column in (
        "workspace",
        "numbers",
        "available",
        "assigned",
        "pages",
        "retries",
        "seconds",
        "changes",
        "result",
    ):
        table.add_column(column, justify="left" if column in ("workspace", "result") else "right")
    for outcome in outcomes:
        snapshot = outcome.snapshot
        if snapshot is None:
            table.add_row(Text(outcome.workspace.label), *[""] * 7, "[red]failed[/]")
            continue
        changes = ", ".join(f"{n} {kind}" for kind, n in outcome.changes.items() if n) or "none"
        table.add_row(
            Text(outcome.workspace.label),
            str(snapshot.row_count),
            str(outcome.available),
            str(snapshot.row_count - outcome.available),
            str(snapshot.page_count),
            str(outcome.retries),
            f"{outcome.seconds:.2f}",
            changes,
            "[green]stored[/]",
        )
    return table


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def cmd_snapshot(args: argparse.Namespace) -> int:
    from pipelines.config import ConfigError, load_settings

    settings = load_settings()
    workspaces = settings.select(args.workspace) if args.workspace else settings.workspaces
    if not workspaces:
        raise ConfigError(
            "no workspaces are configured; list them in synthflow.yaml (or the file "
            "SYNTHFLOW_CONFIG names) or set SYNTHFLOW_WORKSPACES"
        )
    for workspace in workspaces:
        settings.api_key(workspace)
    outcomes = run_snapshot_job(
        settings.model_copy(update={"workspaces": tuple(workspaces)}), args.debug
    )
    stdout.print(summary_table(outcomes))
    for outcome in outcomes:
        if odd := outcome.not_e164:
            shown = ", ".join(odd[:3]) + (", ..." if len(odd) > 3 else "")
            stderr.print(
                f"[yellow]warning:[/] workspace {escape(outcome.workspace.label)}: "
                f"{_count(len(odd), 'number is', 'numbers are')} not E.164 ({escape(shown)}); "
                "stored as the API gave them, with no country",
                highlight=False,
            )
    failures = [outcome for outcome in outcomes if not outcome.succeeded]
    for outcome in failures:
        stderr.print(f"[red]error:[/] {escape(str(outcome.error))}")
    if failures:
        stderr.print(
            f"{len(failures)} of {_count(len(outcomes), 'workspace', 'workspaces')} failed; "
            "the rest are stored."
        )
    return 1 if failures else 0


@contextmanager
def stored_database():
    """A read-only connection to the configured database, which must exist already; waiting
    for a writer is said on stderr, once."""
    from pipelines.config import load_settings
    from pipelines.warehouse.store import connect

    settings = load_settings()
    timeout_s = settings.database.lock_timeout_s

    def waiting(holder: str) -> None:
        stderr.print(
            f"waiting for {escape(str(settings.duckdb_path))}: {escape(holder)} is writing it "
            f"(up to {timeout_s:g} s, database.lock_timeout_s)",
            highlight=False,
            soft_wrap=True,
        )

    with connect(
        settings.duckdb_path, read_only=True, lock_timeout_s=timeout_s, on_wait=waiting
    ) as con:
        yield settings.duckdb_path, con


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report import build_report, html_report

    with stored_database() as (path, con):
        if args.html:
            page = html_report(con, source=str(path), changes_per_workspace=args.changes)
            try:
                args.html.write_text(page)
            except OSError as error:
                raise CommandError(
                    f"cannot write {args.html} ({error.strerror}); name a file in a folder "
                    "that exists and is writable"
                ) from None
            stderr.print(f"Wrote {escape(str(args.html))} ({len(page) // 1024} kB)")
        else:
            _report_console().print(build_report(con, changes_per_workspace=args.changes))
    return 0


def _report_console() -> Console:
    """stdout, as wide as COLUMNS says also when piped: `COLUMNS=80 synthflow-numbers report`
    is a report to paste into a mail or a ticket."""
    columns = os.environ.get("COLUMNS", "")
    return Console(width=int(columns)) if columns.isdigit() else stdout


def cmd_export(args: argparse.Namespace) -> int:
    from pipelines.warehouse.export import export_parquet

    with stored_database() as (_, con):
        written = export_parquet(con, args.directory)
    for table, rows in written.items():
        stdout.print(f"{escape(str(args.directory / table))}: {rows} rows")
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    import csv
    import json

    from pipelines.warehouse.analytics import ask

    with stored_database() as (_, con):
        answer = ask(con, args.sql)
    if args.csv:
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(answer.columns)
        writer.writerows(answer.rows)
    elif args.json:
        records = [dict(zip(answer.columns, row, strict=True)) for row in answer.rows]
        print(json.dumps(records, indent=1, default=_json_value))
    else:
        table = Table(*answer.columns, show_lines=False)
        for row in answer.rows:
            table.add_row(*(Text("NULL" if value is None else str(value)) for value in row))
        stdout.print(table)
        stderr.print(_count(len(answer.rows), "row", "rows"), highlight=False)
    return 0


def _json_value(value: object) -> str:
    """Times in ISO 8601; other values DuckDB gives (decimals, UUIDs, intervals) as text."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def cmd_rebuild_history(args: argparse.Namespace) -> int:
    from pipelines.config import load_settings
    from pipelines.warehouse.history import rebuild_history_committed
    from pipelines.warehouse.store import connect

    settings = load_settings()
    with connect(
        settings.duckdb_path, must_exist=True, lock_timeout_s=settings.database.lock_timeout_s
    ) as con:
        counts = rebuild_history_committed(con, args.workspace or None)
    scope = escape(", ".join(args.workspace)) if args.workspace else "all workspaces"
    stdout.print(
        f"Rebuilt history for {scope}: "
        + ", ".join(f"{count} {kind}" for kind, count in counts.items())
    )
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    from pipelines.synthflow.simulator import demo_simulator

    if not 0 <= args.port <= 65535:
        raise CommandError(f"--port {args.port} is not a port; give 1-65535, or 0 for any free")
    simulator = demo_simulator(
        seed=args.seed,
        workspaces=args.workspaces,
        numbers_per_workspace=args.numbers,
        latency_s=args.latency_ms / 1000,
        page_size_cap=args.page_cap,
        requests_per_second=args.rate,
        api_key=SIMULATED_KEY,
    )
    ids = ",".join(simulator.workspace_ids())

    def ready(base_url: str) -> None:
        stderr.print(
            f"Synthflow simulator serving {base_url} (Ctrl-C stops it); it accepts the key "
            f"{SIMULATED_KEY} and answers 401 to any other. Point at it:"
        )
        stdout.print(
            f"export SYNTHFLOW_BASE_URL={base_url}\nexport SYNTHFLOW_WORKSPACES={ids}\n"
            f"export SYNTHFLOW_API_KEY={SIMULATED_KEY}",
            highlight=False,
            soft_wrap=True,  # whole lines, however many IDs: they are pasted into a shell
        )

    try:
        simulator.serve_forever(port=args.port, on_ready=ready)
    except OSError as error:
        raise CommandError(
            f"cannot serve on 127.0.0.1:{args.port} ({error.strerror}); pick another --port, "
            "or 0 for any free one"
        ) from None
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipelines.demo import run_demo

    return run_demo(Path(args.database), run_snapshot_job, stdout, stderr)


ENVIRONMENT = """\
configuration: SYNTHFLOW_CONFIG (default synthflow.yaml), SYNTHFLOW_WORKSPACES, SYNTHFLOW_API_KEY,
SYNTHFLOW_BASE_URL, SYNTHFLOW_DUCKDB_PATH (default data/numbers.duckdb); see the README"""


def _parser() -> argparse.ArgumentParser:
    # --debug before or after the command: SUPPRESS keeps a subcommand that was not given it
    # from resetting what was given before it.
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show stack traces and Dagster logs",
    )
    parser = argparse.ArgumentParser(
        prog="synthflow-numbers",
        description="Keep an exact history of the phone numbers in Synthflow workspaces.",
        epilog=f"{ENVIRONMENT}\n\nfirst time: synthflow-numbers demo",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[debug],
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, details: str, example: str) -> argparse.ArgumentParser:
        return commands.add_parser(
            name,
            parents=[debug],
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}. {details}",
            epilog=f"example:\n  synthflow-numbers {name} {example}\n\n{ENVIRONMENT}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    snapshot = command(
        "snapshot",
        "snapshot every configured workspace (or those named) into DuckDB",
        "Runs the project's Dagster job, as a schedule does; exits 0 only when every workspace "
        "was stored whole.",
        "--workspace 1710107690998x536152705164378100",
    )
    snapshot.add_argument(
        "--workspace", action="append", metavar="ID", help="only this workspace (repeatable)"
    )
    snapshot.set_defaults(handler=cmd_snapshot)

    demo = command(
        "demo",
        "snapshot a simulated Synthflow while numbers change, then report",
        "Needs no API key and no network: the bundled simulator serves on a free loopback port.",
        "--database /tmp/demo.duckdb",
    )
    demo.add_argument(
        "--database",
        default="data/demo.duckdb",
        help="DuckDB file for the demo, replaced (default: %(default)s)",
    )
    demo.set_defaults(handler=cmd_demo)

    simulate = command(
        "simulate",
        "run the bundled Synthflow API simulator",
        f"Prints the variables that point `snapshot` or `dagster dev` at it; it accepts the key "
        f"{SIMULATED_KEY} and answers 401 to any other.",
        "--port 8765 --workspaces 5 --rate 20",
    )
    simulate.add_argument(
        "--port",
        type=int,
        default=8765,
        help="loopback port, 0 for any free (default: %(default)s)",
    )
    simulate.add_argument(
        "--workspaces", type=int, default=3, help="workspaces to seed (default: %(default)s)"
    )
    simulate.add_argument(
        "--numbers", type=int, default=40, help="numbers per workspace (default: %(default)s)"
    )
    simulate.add_argument(
        "--seed", type=int, default=0, help="seed of the generated data (default: %(default)s)"
    )
    simulate.add_argument(
        "--latency-ms", type=float, default=0.0, help="added to every request (default: 0)"
    )
    simulate.add_argument("--page-cap", type=int, help="silently cap the page size (default: none)")
    simulate.add_argument(
        "--rate", type=float, help="answer 429 past this many requests a second (default: none)"
    )
    simulate.set_defaults(handler=cmd_simulate)

    report = command(
        "report",
        "print inventory, latest changes and utilization",
        "Reads the database (read-only); waits, saying so, while a run writes it.",
        "--html report.html",
    )
    report.add_argument(
        "--changes", type=int, default=10, help="latest changes per workspace (default: 10)"
    )
    report.add_argument(
        "--html", type=Path, metavar="FILE", help="write a self-contained HTML page with charts"
    )
    report.set_defaults(handler=cmd_report)

    query = command(
        "query",
        "run your own SQL on the database, read-only",
        "Prints a table, or CSV or JSON for other tools; waits, saying so, while a run writes "
        "the database. The tables and views are in schema synthflow.",
        '"SELECT workspace_id, count(*) FROM synthflow.current_numbers GROUP BY 1" --csv',
    )
    query.add_argument("sql", metavar="SQL", help="one query (or several: the last one's rows)")
    output = query.add_mutually_exclusive_group()
    output.add_argument("--csv", action="store_true", help="CSV with a header row, on stdout")
    output.add_argument("--json", action="store_true", help="a JSON array of objects, on stdout")
    query.set_defaults(handler=cmd_query)

    export = command(
        "export",
        "write snapshots, history and changes as Parquet (by workspace and date)",
        "Replaces only the files an earlier export wrote into DIR; anything else there stays.",
        "exports/",
    )
    export.add_argument("directory", type=Path, metavar="DIR", help="where the Parquet files go")
    export.set_defaults(handler=cmd_export)

    rebuild = command(
        "rebuild-history",
        "rebuild number_history and number_changes from the stored snapshots",
        "In one transaction: the history is replaced whole or left as it was.",
        "--workspace 1710107690998x536152705164378100",
    )
    rebuild.add_argument(
        "--workspace", action="append", metavar="ID", help="only this workspace (repeatable)"
    )
    rebuild.set_defaults(handler=cmd_rebuild_history)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.debug = getattr(args, "debug", False)  # given neither before nor after the command
    if not args.debug:
        warnings.filterwarnings("ignore")
        logging.getLogger("httpx").setLevel(logging.WARNING)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except UserError as error:
        if args.debug:
            raise
        stderr.print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        return 2
    except KeyboardInterrupt as interruption:
        if isinstance(interruption, Interrupted):
            signum, status = interruption.signum, interruption.exit_status
        else:
            signum, status = signal.SIGINT, 130
        stderr.print(f"stopped by {signal.Signals(signum).name}; nothing partial was stored")
        return status


def run() -> None:
    """The `synthflow-numbers` command: `main()`, then exit with its status.

    What the command built is frozen first, out of reach of Python's final garbage collection
    at exit, which would otherwise walk Dagster's whole heap: about a second on every command.
    The operating system takes the memory back all the same.
    """
    end_on_signals()
    status = main()
    gc.freeze()
    sys.exit(status)


if __name__ == "__main__":
    run()
