"""What a dead run holds is released; what a live run holds is not.

Contract (shared/design.md, "What must always hold": whatever a run that died holds never
blocks the next one): a run whose recorded process is gone is marked failed and the `duckdb`
pool slot of a run that is over is freed, by the command before each run and by the sensor
under the daemon; a run whose process lives, or runs on another host, is left alone, and so is
a retry that still carries the tag it copied from the run it retries.
A real (temporary, persistent) Dagster instance with the project's pool limit; the processes
are real ones, started and ended by the test.
"""

from __future__ import annotations

import subprocess
import sys

import dagster as dg
import pytest

from pipelines.defs.dead_runs import (
    PROCESS_TAG,
    build_dead_run_sensor,
    process_tag,
    release_dead_runs,
)

POOL = "duckdb"
RUN_ID = "0f1e2d3c-4b5a-4697-8877-665544332211"
TAG = f"from pipelines.defs.dead_runs import process_tag; print(process_tag({RUN_ID!r}))"


def tag_of_a_process_that_ended() -> str:
    """PROCESS_TAG of the run RUN_ID in a process that ran and ended."""
    return subprocess.run(
        [sys.executable, "-c", TAG], capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture
def instance():
    overrides = {"concurrency": {"pools": {"default_limit": 1}}}
    with dg.instance_for_test(overrides=overrides) as instance:
        yield instance


def started_run(instance: dg.DagsterInstance, tag: str, *, holds_the_slot: bool) -> str:
    """A STARTED run RUN_ID of the snapshot job with `tag` as its PROCESS_TAG."""
    run = instance.create_run_for_job(
        dg.GraphDefinition(name="snapshot_job").to_job(), run_id=RUN_ID, tags={PROCESS_TAG: tag}
    )
    instance.handle_run_event(
        run.run_id,
        dg.DagsterEvent(
            event_type_value=dg.DagsterEventType.RUN_START.value, job_name=run.job_name
        ),
    )
    if holds_the_slot:
        instance.event_log_storage.initialize_concurrency_limit_to_default(POOL)
        claim = instance.event_log_storage.claim_concurrency_slot(POOL, run.run_id, "step")
        assert claim.is_claimed
    return run.run_id


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def test_a_run_whose_process_is_gone_is_failed_and_its_slot_freed(instance):
    dead = started_run(instance, tag_of_a_process_that_ended(), holds_the_slot=True)

    released = release_dead_runs(instance)

    assert status(instance, dead) == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_run_ids() == set()
    assert len(released) == 2 and dead[:8] in released[0] and "slot" in released[1]
    assert release_dead_runs(instance) == []  # once released, nothing is left to release


def test_a_run_whose_process_lives_keeps_its_slot(instance):
    alive = started_run(instance, process_tag(RUN_ID), holds_the_slot=True)

    assert release_dead_runs(instance) == []
    assert status(instance, alive) == dg.DagsterRunStatus.STARTED
    assert instance.event_log_storage.get_concurrency_run_ids() == {alive}


def test_a_reused_pid_does_not_keep_a_dead_run_alive(instance):
    """The pid of this very process, with another start time: a process that ended, whose pid
    came back to someone else."""
    run_id, host, pid, started = process_tag(RUN_ID).split("/")
    dead = started_run(instance, f"{run_id}/{host}/{pid}/{int(started) - 1}", holds_the_slot=False)

    release_dead_runs(instance)

    assert status(instance, dead) == dg.DagsterRunStatus.FAILURE


def test_a_retry_carrying_its_parents_tag_is_left_to_record_its_own(instance):
    """A retry (or re-execution) copies its parent's tags, the dead process among them, and is
    queued or starting until its step records its own."""
    parents_tag = tag_of_a_process_that_ended().replace(
        RUN_ID, "00000000-0000-4000-8000-000000000000", 1
    )
    retry = started_run(instance, parents_tag, holds_the_slot=False)

    assert release_dead_runs(instance) == []
    assert status(instance, retry) == dg.DagsterRunStatus.STARTED


def test_a_tag_without_the_run_written_before_is_still_released(instance):
    without_the_run = tag_of_a_process_that_ended().removeprefix(f"{RUN_ID}/")
    dead = started_run(instance, without_the_run, holds_the_slot=False)

    release_dead_runs(instance)

    assert status(instance, dead) == dg.DagsterRunStatus.FAILURE


def test_a_run_on_another_host_is_left_to_that_host(instance):
    elsewhere = started_run(instance, f"{RUN_ID}/another-host/12345/678", holds_the_slot=True)

    assert release_dead_runs(instance) == []
    assert status(instance, elsewhere) == dg.DagsterRunStatus.STARTED


def test_the_daemons_sensor_releases_and_says_what(instance):
    dead = started_run(instance, tag_of_a_process_that_ended(), holds_the_slot=True)
    sensor = build_dead_run_sensor()
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING

    result = sensor(dg.build_sensor_context(instance=instance))

    assert isinstance(result, dg.SkipReason) and dead[:8] in result.skip_message
    assert status(instance, dead) == dg.DagsterRunStatus.FAILURE
    assert instance.event_log_storage.get_concurrency_run_ids() == set()
