"""Alerts to the configured Slack-compatible webhook, from the sensors run in process.

Contract: one JSON `{"text": ...}` a finished run at most: a failed run names the job, the
failure and any workspace that failed a check; a run that succeeded is announced only when a
workspace failed a check, naming that workspace and the check. The lateness sensor reports
workspace_fresh for each workspace that turned late or fresh or has a new snapshot (every
workspace at its first tick), nothing when none did, and posts the workspaces that turned late,
once. With no URL the run sensors are stopped and post
nothing; no message holds the API key; a link to the UI is added when its URL is configured.
"""

from pathlib import Path

import dagster as dg
import pytest

from pipelines.config import load_settings
from pipelines.definitions import SNAPSHOT_JOB, build_definitions
from pipelines.defs.lateness import FRESH_CHECK
from pipelines.defs.schedules import all_partitions_tags
from pipelines.synthflow.simulator import PhoneNumber
from tests.conftest import TEST_KEY

UI = "http://dagster.internal:3000"


@pytest.fixture
def alerting(synthflow_env, webhook, monkeypatch):
    """The environment with the webhook and the UI's address configured."""
    url, received = webhook
    monkeypatch.setenv("SYNTHFLOW_ALERT_WEBHOOK_URL", url)
    config = Path(synthflow_env["SYNTHFLOW_CONFIG"])
    config.write_text(config.read_text() + f"alerts:\n  dagster_url: {UI}/\n")
    return received


def run_job(instance: dg.DagsterInstance) -> dg.ExecuteInProcessResult:
    settings = load_settings()
    partitions = dg.StaticPartitionsDefinition(settings.workspace_ids)
    return (
        build_definitions(settings)
        .resolve_job_def(SNAPSHOT_JOB)
        .execute_in_process(
            instance=instance, tags=all_partitions_tags(partitions), raise_on_error=False
        )
    )


def tell_sensor(name: str, instance: dg.DagsterInstance, result: dg.ExecuteInProcessResult):
    """Call the run sensor `name` as the daemon does for the run that gave `result`."""
    ended = next(
        e
        for e in result.all_events
        if e.event_type_value in ("PIPELINE_FAILURE", "PIPELINE_SUCCESS")
    )
    sensor = build_definitions(load_settings()).get_sensor_def(name)
    context = dg.build_run_status_sensor_context(
        sensor_name=name,
        dagster_event=ended,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    )
    return sensor, sensor(context)


def tick_lateness(instance: dg.DagsterInstance, cursor: str | None) -> dg.SensorResult:
    defs = build_definitions(load_settings())
    sensor = defs.get_sensor_def("workspace_lateness")
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"warehouse": defs.resources["warehouse"]}
    )
    return sensor(context)


def test_a_failed_run_is_announced_with_a_link_to_it(alerting, simulator):
    simulator.break_workspace(simulator.workspace_ids()[0], "truncate")
    with dg.instance_for_test() as instance:
        result = run_job(instance)
        assert not result.success
        sensor, _ = tell_sensor("snapshot_failure_alert", instance, result)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    (message,) = alerting
    text = message["text"]
    assert SNAPSHOT_JOB in text and "failed" in text and simulator.workspace_ids()[0] in text
    assert f"{UI}/runs/{result.run_id}" in text
    assert TEST_KEY not in text


def test_a_workspace_that_fails_a_check_is_announced_once_by_name(alerting, simulator):
    odd, fine, _ = simulator.workspace_ids()
    simulator.add_number(odd, PhoneNumber("7166663572", None, True))
    with dg.instance_for_test() as instance:
        result = run_job(instance)
        assert result.success
        tell_sensor("failed_check_alert", instance, result)
        evaluations = {e.partition: e for e in result.get_asset_check_evaluations() if e.partition}
    (message,) = alerting
    assert odd in message["text"] and "numbers_are_e164" in message["text"]
    assert fine not in message["text"] and TEST_KEY not in message["text"]
    assert not evaluations[odd].passed and evaluations[fine].passed
    assert evaluations[odd].metadata["failing_checks"].value == "numbers_are_e164"
    assert "7166663572" in evaluations[odd].metadata["examples"].value
    assert "examples" not in evaluations[fine].metadata


def test_a_run_whose_checks_all_pass_is_not_announced(alerting, simulator):
    with dg.instance_for_test() as instance:
        result = run_job(instance)
        _, answer = tell_sensor("failed_check_alert", instance, result)
    assert isinstance(answer, dg.SkipReason)
    assert alerting == []


def test_a_workspace_turning_late_is_reported_and_announced_once(alerting, simulator):
    late, *fresh = simulator.workspace_ids()
    simulator.break_workspace(late, "truncate")
    with dg.instance_for_test() as instance:
        run_job(instance)
        first = tick_lateness(instance, None)
        assert {(e.partition, e.passed) for e in first.asset_events} == {
            (late, False),
            *((workspace_id, True) for workspace_id in fresh),
        }
        assert all(e.check_name == FRESH_CHECK for e in first.asset_events)
        (message,) = alerting
        assert late in message["text"] and "late" in message["text"]
        assert not any(workspace_id in message["text"] for workspace_id in fresh)

        again = tick_lateness(instance, first.cursor)
        assert again.asset_events == [] and len(alerting) == 1

        # Every workspace has a new snapshot, which the check must name again; none is late.
        simulator.repair_workspace(late)
        run_job(instance)
        repaired = tick_lateness(instance, again.cursor)
        assert {(e.partition, e.passed) for e in repaired.asset_events} == {
            (workspace_id, True) for workspace_id in simulator.workspace_ids()
        }
        assert len(alerting) == 1


def test_without_a_webhook_the_run_sensors_are_stopped_and_post_nothing(synthflow_env, simulator):
    simulator.break_workspace(simulator.workspace_ids()[0], "truncate")
    with dg.instance_for_test() as instance:
        result = run_job(instance)
        sensor, answer = tell_sensor("snapshot_failure_alert", instance, result)
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    assert isinstance(answer, dg.SkipReason)


def test_the_webhook_comes_from_the_environment_over_the_file(monkeypatch, tmp_path):
    config = tmp_path / "synthflow.yaml"
    config.write_text("alerts:\n  webhook_url: https://hooks.example.com/file\n")
    monkeypatch.setenv("SYNTHFLOW_CONFIG", str(config))
    assert load_settings().alerts.webhook_url == "https://hooks.example.com/file"
    monkeypatch.setenv("SYNTHFLOW_ALERT_WEBHOOK_URL", "https://hooks.example.com/env")
    assert load_settings().alerts.webhook_url == "https://hooks.example.com/env"
