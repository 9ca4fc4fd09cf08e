"""The `synthflow-numbers` command: snapshot, demo, simulate, report, query, export, import,
rebuild-history and maintain.

Results go to stdout, messages for people to stderr. Known failures (bad configuration, a
locked database, a workspace that failed) end with a one-paragraph message and a non-zero
exit; a stack trace only with --debug. Each command's module imports what it needs when it
runs: `--help` starts without Dagster, the HTTP client or pandas, the reading commands without
Dagster or the HTTP client.
"""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from rich.markup import escape

from pipelines.cli.database import (
    cmd_export,
    cmd_import,
    cmd_maintain,
    cmd_query,
    cmd_rebuild_history,
    cmd_report,
)
from pipelines.cli.output import stderr
from pipelines.cli.simulator import SIMULATED_KEY, cmd_demo, cmd_simulate
from pipelines.cli.snapshot import cmd_snapshot
from pipelines.interrupts import Interrupted, end_on_signals
from pipelines.user_errors import UserError

ENVIRONMENT = """\
configuration: SYNTHFLOW_CONFIG (default synthflow.yaml), SYNTHFLOW_WORKSPACES, SYNTHFLOW_API_KEY,
SYNTHFLOW_BASE_URL, SYNTHFLOW_DUCKDB_PATH (default data/numbers.duckdb), or for a DuckLake
SYNTHFLOW_DUCKLAKE_CATALOG and SYNTHFLOW_DUCKLAKE_DATA_PATH; see the README"""


def _number(kind: Callable[[str], float], *, zero: bool) -> Callable[[str], float]:
    """An argparse type: a `kind` above 0, or at least 0 when `zero` is allowed."""

    def parse(text: str) -> float:
        value = kind(text)
        if value < 0 or (value == 0 and not zero):
            bound = "0 or more" if zero else "above 0"
            raise argparse.ArgumentTypeError(f"must be {bound}: {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names it in "invalid int value"
    return parse


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
        "--workspaces",
        type=_number(int, zero=False),
        default=3,
        help="workspaces to seed (default: %(default)s)",
    )
    simulate.add_argument(
        "--numbers",
        type=_number(int, zero=True),
        default=40,
        help="numbers per workspace (default: %(default)s)",
    )
    simulate.add_argument(
        "--seed", type=int, default=0, help="seed of the generated data (default: %(default)s)"
    )
    simulate.add_argument(
        "--latency-ms",
        type=_number(float, zero=True),
        default=0.0,
        help="added to every request (default: 0)",
    )
    simulate.add_argument(
        "--page-cap",
        type=_number(int, zero=False),
        help="silently cap the page size (default: none)",
    )
    simulate.add_argument(
        "--rate",
        type=_number(float, zero=False),
        help="answer 429 past this many requests a second (default: none)",
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
        "--html",
        type=Path,
        metavar="FILE",
        help="write a self-contained HTML page with a chart of assigned share per day",
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

    imported = command(
        "import",
        "fill an empty warehouse from an export: its snapshots, and history rebuilt",
        "In one transaction. Moves a DuckDB file's data into a DuckLake: export with the file "
        "configured, import with the lake.",
        "exports/",
    )
    imported.add_argument("directory", type=Path, metavar="DIR", help="an export's folder")
    imported.set_defaults(handler=cmd_import)

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

    command(
        "maintain",
        "checkpoint the warehouse: on a DuckLake, merge its small files",
        "A run checkpoints the file itself; a DuckLake's merging conflicts with commits made "
        "meanwhile, so run this when no run writes.",
        "",
    ).set_defaults(handler=cmd_maintain)
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
