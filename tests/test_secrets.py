"""Secrets: the API key appears nowhere, and travels only where it should.

Contract (shared/design.md, "What must always hold" and "Configuration"): the API key appears
nowhere, not in logs, Dagster metadata, exceptions, DuckDB or files, on success and on every
kind of failure; it travels only in the Authorization header, over TLS that is verified, or
over plain http to this machine (the simulator) and nowhere else.

The keys here are made up and distinctive, so any trace of them is found by a plain search:
the command's stdout and stderr (with and without --debug), every Dagster event of the run
serialized whole (metadata and error info included), every file under the test's temporary
directory and the Dagster instance's storage, and every VARCHAR column of every DuckDB table.
One run meets every path at once: a healthy workspace that needs retries, a workspace with
its own key variable, one whose key is refused (401), one that keeps answering 500 with a body
that echoes the Authorization header, and one whose pages keep coming back malformed. TLS
verification is tried against a loopback HTTPS server whose certificate nobody trusts.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import dagster as dg
import duckdb
import httpx
import pytest
from pydantic import SecretStr

from pipelines.config import ConfigError, FetchSettings, load_settings
from pipelines.config.values import check_base_url
from pipelines.definitions import SNAPSHOT_JOB, build_definitions
from pipelines.defs.schedules import all_partitions_tags
from pipelines.synthflow.client import Endpoint, Page, RequestCounts, SynthflowClient
from pipelines.synthflow.errors import UnavailableError
from pipelines.synthflow.simulator import Simulator
from tests.test_cli import run_cli

KEY = "sk-live-DISTINCTIVE-test-9f8e7d"
EU_KEY = "sk-live-DISTINCTIVE-eu-4c3b2a"
# A fragment both keys share: finds a key that was cut short or partly masked, too.
TRACES = (KEY, EU_KEY, "DISTINCTIVE")

HEALTHY = "1700000000001x000000000000000001"
EU = "1700000000002x000000000000000002"
REFUSED = "1700000000003x000000000000000003"
UNAVAILABLE = "1700000000004x000000000000000004"
MALFORMED = "1700000000005x000000000000000005"
WORKSPACES = (HEALTHY, EU, REFUSED, UNAVAILABLE, MALFORMED)


def traces_in(text: str | bytes, needles: tuple[str, ...] = TRACES) -> list[str]:
    """Which of the needles (by default the keys' traces) the text holds."""
    if isinstance(text, bytes):
        return [needle for needle in needles if needle.encode() in text]
    return [needle for needle in needles if needle in text]


def files_holding(directory: Path, needles: tuple[str, ...] = TRACES) -> list[str]:
    return [
        str(path)
        for path in sorted(directory.rglob("*"))
        if path.is_file() and traces_in(path.read_bytes(), needles)
    ]


def events_holding(events: list, needles: tuple[str, ...] = TRACES) -> list:
    """The Dagster event log entries whose whole serialized form holds a needle."""
    return [event for event in events if traces_in(dg.serialize_value(event), needles)]


def duckdb_columns_holding(path: Path, needles: tuple[str, ...] = TRACES) -> list[str]:
    """`schema.table.column` of every VARCHAR column in the file with a cell holding a needle."""
    found = []
    with duckdb.connect(str(path), read_only=True) as con:
        columns = con.execute(
            "SELECT schema_name, table_name, column_name FROM duckdb_columns() "
            "WHERE data_type = 'VARCHAR' AND NOT internal ORDER BY ALL"
        ).fetchall()
        for schema, table, column in columns:
            cells = f'SELECT "{column}" FROM "{schema}"."{table}" WHERE "{column}" IS NOT NULL'
            if any(traces_in(value, needles) for (value,) in con.execute(cells).fetchall()):
                found.append(f"{schema}.{table}.{column}")
    return found


@pytest.fixture
def sim() -> Iterator[Simulator]:
    """Five workspaces; the simulator accepts KEY, EU_KEY for EU, and refuses KEY for REFUSED."""
    keys = {wid: KEY for wid in WORKSPACES} | {EU: EU_KEY, REFUSED: "sk-live-some-other-key"}
    with Simulator(seed=4, api_keys=keys) as simulator:
        for workspace_id in WORKSPACES:
            simulator.add_workspace(workspace_id, 45)
        simulator.break_workspace(UNAVAILABLE, "echo_key")  # a 500 whose body echoes the key
        simulator.break_workspace(MALFORMED, "wrong_type")
        yield simulator


@pytest.fixture
def secret_env(sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The project pointed at the simulator with the distinctive keys, in this process too."""
    config = tmp_path / "synthflow.yaml"
    config.write_text(
        "workspaces:\n"
        + "".join(f"  - id: {wid}\n" for wid in WORKSPACES if wid != EU)
        + f"  - id: {EU}\n    name: Europe\n    api_key_env: SYNTHFLOW_API_KEY_EU\n"
        "fetch:\n  page_size: 10\n  max_retries: 2\n  max_backoff_s: 0.02\n"
    )
    env = {
        "SYNTHFLOW_BASE_URL": sim.base_url,
        "SYNTHFLOW_API_KEY": KEY,
        "SYNTHFLOW_API_KEY_EU": EU_KEY,
        "SYNTHFLOW_DUCKDB_PATH": str(tmp_path / "numbers.duckdb"),
        "SYNTHFLOW_CONFIG": str(config),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("SYNTHFLOW_WORKSPACES", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)
    return env


def test_the_cli_shows_and_records_no_key_on_success_or_any_failure(sim, secret_env, tmp_path):
    home = tmp_path / "dagster_home"  # the --debug run is recorded here, as for `dagster dev`
    home.mkdir()
    sim.fail_next("500", 2, workspace_id=HEALTHY)
    plain = run_cli("snapshot")
    sim.fail_next("500", 2, workspace_id=HEALTHY)
    debug = run_cli("--debug", "snapshot", env={"DAGSTER_HOME": str(home)})
    report = run_cli("report")

    # Every path was taken: two workspaces stored, three failed, each for its own reason.
    assert plain.returncode == debug.returncode == 1, plain.stderr
    for failed in (REFUSED, UNAVAILABLE, MALFORMED):
        assert failed in plain.stderr
    assert "401" in plain.stderr and "500" in plain.stderr and "malformed" in plain.stderr
    assert "Bearer [redacted]" in plain.stderr
    assert report.returncode == 0, report.stderr
    assert HEALTHY in report.stdout and EU in report.stdout

    for result in (plain, debug, report):
        assert traces_in(result.stdout) == [], result.args
        assert traces_in(result.stderr) == [], result.args
    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        events = instance.all_logs(run.run_id)
        assert any(event.dagster_event and event.dagster_event.is_step_failure for event in events)
        assert events_holding(events) == []
        assert traces_in(dg.serialize_value(run)) == []
        # The scans reach what they search: the refused workspace's error is found in both.
        assert events_holding(events, (REFUSED,)) and files_holding(home, (REFUSED,))
    assert files_holding(tmp_path) == []
    database = Path(secret_env["SYNTHFLOW_DUCKDB_PATH"])
    assert duckdb_columns_holding(database) == []
    assert "synthflow.snapshots.workspace_id" in duckdb_columns_holding(database, (HEALTHY,))


def test_a_dagster_job_run_holds_no_key_in_events_metadata_errors_or_storage(
    sim, secret_env, tmp_path, capfd
):
    settings = load_settings()
    sim.fail_next("503", 2, workspace_id=HEALTHY)
    with dg.instance_for_test() as instance:
        result = (
            build_definitions(settings)
            .resolve_job_def(SNAPSHOT_JOB)
            .execute_in_process(
                instance=instance,
                tags=all_partitions_tags(dg.StaticPartitionsDefinition(settings.workspace_ids)),
                raise_on_error=False,
            )
        )
        assert not result.success
        failure = next(event for event in result.all_events if event.is_step_failure)
        assert REFUSED in failure.step_failure_data.error.message
        assert instance.get_materialized_partitions(
            dg.AssetKey(["synthflow", "number_snapshots"])
        ) == {HEALTHY, EU}

        events = instance.all_logs(result.run_id)
        assert events_holding(events) == []
        assert traces_in(dg.serialize_value(instance.get_run_by_id(result.run_id))) == []
        storage = Path(instance.root_directory)
        assert files_holding(storage) == []
        # The scans reach what they search: the failure, and the metadata of what was stored.
        assert events_holding(events, (REFUSED,)) and files_holding(storage, (REFUSED,))
        assert events_holding(events, ("changes_added",))
    captured = capfd.readouterr()
    assert traces_in(captured.out) == [] and traces_in(captured.err) == []
    assert files_holding(tmp_path) == []
    assert duckdb_columns_holding(Path(secret_env["SYNTHFLOW_DUCKDB_PATH"])) == []


@pytest.mark.parametrize(
    "config_text",
    [
        f"api_key: {KEY}\n",
        f"workspaces:\n  - id: {HEALTHY}\n    api_key: {KEY}\n",
        f"workspaces:\n  - id: {HEALTHY}\n    api_key_env: {KEY}\n",
        f'workspaces:\n  - id: {HEALTHY}\n    api_key_env: "{KEY}\n',
    ],
    ids=[
        "key-as-unknown-top-level-entry",
        "key-as-unknown-workspace-entry",
        "key-where-the-variable-name-goes",
        "key-in-broken-yaml",
    ],
)
def test_a_bad_config_holding_the_key_is_refused_without_repeating_it(
    secret_env, tmp_path_factory, config_text
):
    # Outside tmp_path: this file holds the key on purpose.
    config = tmp_path_factory.mktemp("pasted") / "synthflow.yaml"
    config.write_text(config_text)
    with pytest.raises(ConfigError) as refused:
        load_settings({**secret_env, "SYNTHFLOW_CONFIG": str(config)})
    assert str(config) in str(refused.value)
    assert traces_in(str(refused.value)) == []


def test_the_cli_refuses_a_pasted_key_in_the_config_without_showing_it(
    secret_env, tmp_path_factory
):
    config = tmp_path_factory.mktemp("pasted") / "synthflow.yaml"
    config.write_text(f"workspaces:\n  - id: {HEALTHY}\n    api_key_env: {KEY}\n")
    for args in (["snapshot"], ["--debug", "snapshot"]):
        result = run_cli(*args, env={"SYNTHFLOW_CONFIG": str(config)})
        assert result.returncode != 0
        assert "api_key_env" in result.stderr
        assert traces_in(result.stdout + result.stderr) == [], args


@pytest.mark.parametrize(
    "url",
    [
        "http://api.synthflow.ai/v2",
        "http://10.0.0.7:8765/v2",
        "http://0.0.0.0:8765/v2",
        "http://127.0.0.1.nip.io/v2",
        "http://localhost.example.com/v2",
        "http://localhost@api.synthflow.ai/v2",
        "HTTP://API.SYNTHFLOW.AI/v2",
        "ftp://api.synthflow.ai/v2",
        "api.synthflow.ai/v2",
    ],
)
def test_plain_http_to_a_host_that_is_not_loopback_is_refused(url):
    with pytest.raises(ValueError):
        check_base_url(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://api.synthflow.ai/v2",
        "https://api.eu.synthflow.ai/v2/",
        "http://127.0.0.1:8765/v2",
        "http://127.0.0.2:8765/v2",
        "http://localhost:8765/v2",
        "http://[::1]:8765/v2",
    ],
)
def test_https_anywhere_and_plain_http_to_loopback_are_allowed(url):
    assert check_base_url(url) == url.rstrip("/")


def test_a_plain_http_base_url_is_refused_from_the_environment_and_the_file(secret_env, tmp_path):
    with pytest.raises(ConfigError, match="SYNTHFLOW_BASE_URL"):
        load_settings({**secret_env, "SYNTHFLOW_BASE_URL": "http://api.synthflow.ai/v2"})
    config = tmp_path / "plain.yaml"
    config.write_text(f"workspaces:\n  - id: {HEALTHY}\n    base_url: http://10.1.2.3/v2\n")
    with pytest.raises(ConfigError, match=HEALTHY):
        load_settings({**secret_env, "SYNTHFLOW_CONFIG": str(config)})


PROXY_VARIABLES = (
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "ALL_PROXY",
    "http_proxy",
    "https_proxy",
    "all_proxy",
)


@pytest.fixture
def httpx_clients(monkeypatch: pytest.MonkeyPatch) -> list[httpx.AsyncClient]:
    """Every httpx.AsyncClient (or subclass) created while the test runs (real ones, only
    recorded)."""
    created: list[httpx.AsyncClient] = []
    init = httpx.AsyncClient.__init__

    def recorded(self: httpx.AsyncClient, *args, **kwargs) -> None:
        init(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(httpx.AsyncClient, "__init__", recorded)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return created


@pytest.fixture
def untrusted_tls_server(tmp_path: Path) -> Iterator[str]:
    """A loopback HTTPS server with a self-signed certificate that serves a valid page; its
    base URL."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    page = b'{"status":"ok","response":{"pagination":{"total_records":0},"phone_numbers":[]}}'

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(page)))
            self.end_headers()
            self.wfile.write(page)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"https://127.0.0.1:{server.server_address[1]}/v2"
    finally:
        server.shutdown()
        server.server_close()


async def read_pages(base_url: str) -> list[Page]:
    """Two pages of the HEALTHY workspace, both in flight at once, as a run reads them."""
    endpoint = Endpoint(HEALTHY, base_url, SecretStr(KEY))
    async with SynthflowClient(FetchSettings(concurrency=4)) as client:
        pages = [client.fetch_page(endpoint, offset, 5, RequestCounts()) for offset in (0, 5)]
        return await asyncio.gather(*pages)


def read_a_few_pages_concurrently() -> None:
    """Use the client as a run does (several requests in flight), against the simulator."""
    with Simulator(seed=1) as simulator:
        simulator.add_workspace(HEALTHY, 20)
        asyncio.run(read_pages(simulator.base_url))


def test_a_proxy_from_the_environment_carries_the_requests(monkeypatch):
    """The API's host cannot be resolved here; the requests arrive through the proxy named in
    the environment (the simulator, which answers a proxied request's full URL)."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    with Simulator(seed=1) as proxy:
        proxy.add_workspace(HEALTHY, 20)
        monkeypatch.setenv("HTTP_PROXY", proxy.base_url.removesuffix("/v2"))
        pages = asyncio.run(read_pages("http://api.synthflow.invalid/v2"))
        assert proxy.stats.requests == 2
    assert [page.numbers.num_rows for page in pages] == [5, 5]


def test_a_server_whose_certificate_is_not_trusted_gets_no_request(untrusted_tls_server):
    """The key is never sent over TLS that is not verified: the handshake fails first."""
    endpoint = Endpoint(HEALTHY, untrusted_tls_server, SecretStr(KEY))

    async def read() -> Page:
        async with SynthflowClient(FetchSettings(max_retries=0)) as client:
            return await client.fetch_page(endpoint, 0, 5, RequestCounts())

    with pytest.raises(UnavailableError, match="connection failed"):
        asyncio.run(read())


def test_no_http_client_follows_a_redirect_that_could_carry_the_key_elsewhere(httpx_clients):
    read_a_few_pages_concurrently()
    assert httpx_clients
    assert [client.follow_redirects for client in httpx_clients] == [False] * len(httpx_clients)
