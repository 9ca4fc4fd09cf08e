"""What a run that died leaves behind, found and released before it blocks the next one.

A run killed with SIGKILL (the OOM killer, a lost node) stays STARTED and keeps the `duckdb`
pool slot its step held, so every later step waits for ever: the daemon's run monitoring sees
a dead worker only after `max_runtime_seconds`, and the command line has none. So each run
records itself and its process (`PROCESS_TAG`: run ID, host, pid and start time, since pids are
reused), and `release_dead_runs`, called by the command line before each run and by a sensor
under the daemon, fails the unfinished runs whose process on this host is gone and frees the
pool slots of runs that are over. A retry or re-execution copies its parent's tags: until its
step records its own, the tag names the parent, and the retry is left alone.
"""

import os
import socket
from pathlib import Path

import dagster as dg

PROCESS_TAG = "synthflow/process"
UNFINISHED = [
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.CANCELING,
]


def _started(pid: int) -> str | None:
    """When the process started (clock ticks since boot, from /proc); None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22; the command name may hold spaces


def process_tag(run_id: str) -> str:
    """`PROCESS_TAG` for the run `run_id` in this process."""
    pid = os.getpid()
    return f"{run_id}/{socket.gethostname()}/{pid}/{_started(pid) or ''}"


def _gone(host: str, pid: str, started: str) -> bool:
    """Whether the process is known to be gone; a process on another host is not known."""
    if host != socket.gethostname():
        return False
    if started:
        return _started(int(pid)) != started
    try:
        os.kill(int(pid), 0)  # where there is no /proc: the pid alone
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process, alive
        pass
    return False


def release_dead_runs(instance: dg.DagsterInstance) -> list[str]:
    """Fail the runs whose process is gone, free the pool slots of finished runs; say which."""
    released = []
    for run in instance.get_runs(filters=dg.RunsFilter(statuses=UNFINISHED)):
        tag = run.tags.get(PROCESS_TAG)
        if tag is None:
            continue
        # A tag written before runs were named in it (three parts) is the run's own.
        *owner, host, pid, started = tag.split("/")
        copied = owner and owner != [run.run_id]  # a retry's, before its step records its own
        if copied or not _gone(host, pid, started):
            continue
        instance.report_run_failed(
            run, f"Its process ({pid} on {host}) is gone: it was killed before it could end."
        )
        released.append(f"run {run.run_id[:8]} (process {pid} is gone), marked failed")
    storage = instance.event_log_storage
    for run_id in storage.get_concurrency_run_ids():
        run = instance.get_run_by_id(run_id)
        if run is not None and run.is_finished:
            storage.free_concurrency_slots_for_run(run_id)
            released.append(f"the duckdb pool slot held by run {run_id[:8]}, which is over")
    return released


def build_dead_run_sensor() -> dg.SensorDefinition:
    """Under the daemon: release what dead runs hold every few seconds."""

    @dg.sensor(
        name="release_dead_runs",
        minimum_interval_seconds=10,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Marks failed the runs whose process on this host is gone (killed) and "
        "frees the duckdb pool slots of runs that are over, so they never block the next run.",
    )
    def release_dead_runs_sensor(context: dg.SensorEvaluationContext):
        released = release_dead_runs(context.instance)
        return dg.SkipReason(
            "released " + "; ".join(released) if released else "nothing to release"
        )

    return release_dead_runs_sensor
