"""The commands that read the stored database (report, query, export) or rebuild its history."""

import argparse
import os
import sys
from contextlib import contextmanager

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipelines.cli.output import CommandError, count, stderr, stdout


@contextmanager
def stored_database():
    """A read-only connection to the configured database, which must exist already; waiting
    for a writer is said on stderr, once."""
    from pipelines.config import load_settings
    from pipelines.warehouse.connection import connect

    settings = load_settings()
    timeout_s = settings.database.lock_timeout_s

    def waiting(holder: str) -> None:
        stderr.print(
            f"waiting for {escape(str(settings.warehouse))}: {escape(holder)} is writing it "
            f"(up to {timeout_s:g} s, database.lock_timeout_s)",
            highlight=False,
            soft_wrap=True,
        )

    with connect(
        settings.warehouse, read_only=True, lock_timeout_s=timeout_s, on_wait=waiting
    ) as con:
        yield settings.warehouse, con


def cmd_report(args: argparse.Namespace) -> int:
    from pipelines.report import build_report
    from pipelines.report.page import html_report

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


def cmd_import(args: argparse.Namespace) -> int:
    from pipelines.config import load_settings
    from pipelines.warehouse.connection import connect
    from pipelines.warehouse.export import import_parquet

    settings = load_settings()
    with connect(settings.warehouse, **dict(settings.database)) as con:
        read = import_parquet(con, args.directory)
    for table, rows in read.items():
        stdout.print(f"{escape(str(args.directory / table))}: {rows} rows imported")
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
        table = Table(show_lines=False)
        for name in answer.columns:  # a name can be data (PIVOT ... ON sid): never markup
            table.add_column(Text(name))
        for row in answer.rows:
            table.add_row(*(Text("NULL" if value is None else str(value)) for value in row))
        stdout.print(table)
        stderr.print(count(len(answer.rows), "row", "rows"), highlight=False)
    return 0


def _json_value(value: object) -> str:
    """Times in ISO 8601; other values DuckDB gives (decimals, UUIDs, intervals) as text."""
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def cmd_rebuild_history(args: argparse.Namespace) -> int:
    from pipelines.config import load_settings
    from pipelines.warehouse.connection import connect
    from pipelines.warehouse.history import rebuild_history_committed

    settings = load_settings()
    # database.* are connect's keywords by name: a writer gets each of them.
    with connect(settings.warehouse, must_exist=True, **dict(settings.database)) as con:
        counts = rebuild_history_committed(con, args.workspace or None)
    scope = escape(", ".join(args.workspace)) if args.workspace else "all workspaces"
    stdout.print(
        f"Rebuilt history for {scope}: "
        + ", ".join(f"{changes} {kind}" for kind, changes in counts.items())
    )
    return 0


def cmd_maintain(args: argparse.Namespace) -> int:
    from pipelines.config import load_settings
    from pipelines.warehouse.checkpoints import maintain
    from pipelines.warehouse.connection import connect

    settings = load_settings()
    with connect(settings.warehouse, must_exist=True, **dict(settings.database)) as con:
        maintain(con)
    stdout.print(f"Checkpointed {escape(str(settings.warehouse))}")
    return 0
