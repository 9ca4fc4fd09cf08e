"""`snapshot`: the project's Dagster job run in this process, as the schedule runs it, with
progress on stderr and a summary on stdout."""

from __future__ import annotations

import argparse
import fcntl
import gc
import os
import signal
import uuid
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from rich.markup import escape
from rich.table import Table
from rich.text import Text

from pipelines.cli.output import CommandError, count, stderr, stdout
from pipelines.interrupts import Interrupted

# Dagster, the HTTP client and the Arrow stack are imported when the command runs.
if TYPE_CHECKING:
    from pipelines.config import Settings
    from pipelines.snapshot import WorkspaceOutcome


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
                f"{count(outcome.snapshot.row_count, 'number', 'numbers')} in "
                f"{count(outcome.snapshot.page_count, 'page', 'pages')}"
            )
        else:
            self._bar.console.print(f"[red]failed[/] {escape(outcome.workspace.label)}")
        self._bar.advance(self._task)
        if self._bar.finished:
            self.stop()

    def stop(self) -> None:
        """Take the bar away and give the terminal its cursor back, if it was drawn."""
        if self._bar.live.is_started:
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
    from pipelines.defs.dead_runs import PROCESS_TAG, process_tag, release_dead_runs
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
        run_id = str(uuid.uuid4())  # named in its process tag from the start
        try:
            result = job.execute_in_process(
                instance=instance,
                run_id=run_id,
                tags={**all_partitions_tags(partitions), PROCESS_TAG: process_tag(run_id)},
                run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
                raise_on_error=False,
            )
        finally:  # a run that failed or was stopped before every workspace finished
            progress.stop()
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
        workspace.api_key()
    outcomes = run_snapshot_job(
        settings.model_copy(update={"workspaces": tuple(workspaces)}), args.debug
    )
    stdout.print(summary_table(outcomes))
    for outcome in outcomes:
        if odd := outcome.not_e164:
            shown = ", ".join(odd[:3]) + (", ..." if len(odd) > 3 else "")
            stderr.print(
                f"[yellow]warning:[/] workspace {escape(outcome.workspace.label)}: "
                f"{count(len(odd), 'number is', 'numbers are')} not E.164 ({escape(shown)}); "
                "stored as the API gave them, with no country",
                highlight=False,
            )
    failures = [outcome for outcome in outcomes if not outcome.succeeded]
    for outcome in failures:
        stderr.print(f"[red]error:[/] {escape(str(outcome.error))}")
    if failures:
        stderr.print(
            f"{len(failures)} of {count(len(outcomes), 'workspace', 'workspaces')} failed; "
            "the rest are stored."
        )
    return 1 if failures else 0
