"""The run-failure sensor posts a short Slack-compatible message to the configured webhook.

Contract: when a snapshot run fails and a webhook URL is configured, one JSON `{"text": ...}`
naming the job and the failure reaches the URL; with no URL the sensor is stopped by default
and posts nothing; the message never holds the API key.
"""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import dagster as dg
import pytest

from pipelines.config import AlertSettings, load_settings
from pipelines.definitions import SNAPSHOT_JOB, build_definitions
from pipelines.defs.schedules import all_partitions_tags
from pipelines.defs.sensors import build_failure_sensor
from tests.conftest import TEST_KEY


@pytest.fixture
def webhook():
    """A loopback receiver that records every JSON body posted to it."""
    received: list[dict] = []

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers["Content-Length"])
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
    server.server_close()


def failed_run_context(instance, sensor_name: str):
    settings = load_settings()
    defs = build_definitions(settings)
    partitions = dg.StaticPartitionsDefinition(settings.workspace_ids)
    result = defs.resolve_job_def(SNAPSHOT_JOB).execute_in_process(
        instance=instance, tags=all_partitions_tags(partitions), raise_on_error=False
    )
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "PIPELINE_FAILURE")
    return dg.build_run_status_sensor_context(
        sensor_name=sensor_name,
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=result.dagster_run,
    ).for_run_failure()


def test_a_failed_run_is_announced_to_the_webhook(synthflow_env, simulator, webhook):
    url, received = webhook
    broken = simulator.workspace_ids()[0]
    simulator.break_workspace(broken, "truncate")
    sensor = build_failure_sensor(dg.define_asset_job(SNAPSHOT_JOB), AlertSettings(webhook_url=url))
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
    with dg.instance_for_test() as instance:
        sensor(failed_run_context(instance, sensor.name))
    assert len(received) == 1
    text = received[0]["text"]
    assert SNAPSHOT_JOB in text and "failed" in text
    assert TEST_KEY not in text


def test_without_a_webhook_the_sensor_is_stopped_and_posts_nothing(synthflow_env, simulator):
    simulator.break_workspace(simulator.workspace_ids()[0], "truncate")
    sensor = build_failure_sensor(dg.define_asset_job(SNAPSHOT_JOB), AlertSettings())
    assert sensor.default_status == dg.DefaultSensorStatus.STOPPED
    with dg.instance_for_test() as instance:
        result = sensor(failed_run_context(instance, sensor.name))
    assert isinstance(result, dg.SkipReason)


def test_the_webhook_comes_from_the_environment_over_the_file(monkeypatch, tmp_path):
    config = tmp_path / "synthflow.yaml"
    config.write_text("alerts:\n  webhook_url: https://hooks.example.com/file\n")
    monkeypatch.setenv("SYNTHFLOW_CONFIG", str(config))
    assert load_settings().alerts.webhook_url == "https://hooks.example.com/file"
    monkeypatch.setenv("SYNTHFLOW_ALERT_WEBHOOK_URL", "https://hooks.example.com/env")
    assert load_settings().alerts.webhook_url == "https://hooks.example.com/env"
