"""Configuration: environment variables over the YAML file, the file always validated.

The contract (shared/design.md, "Configuration"):
- with no file and no variables, the documented defaults apply;
- a variable wins over the file; SYNTHFLOW_WORKSPACES replaces the file's workspace list but
  keeps each listed workspace's own region, base_url and key variable, and the file is still
  read and validated;
- a workspace's region picks its cluster's base URL; SYNTHFLOW_BASE_URL serves the rest;
- a bad config is refused at load time with a message naming the file, the entry (workspace
  id or index) and the fix; plain http:// is only allowed to loopback;
- a workspace whose key variable is unset fails with the name of that variable;
- no message ever holds an API key.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from pipelines.config import DEFAULT_BASE_URL, ConfigError, DuckLake, FetchSettings, load_settings
from pipelines.config.values import DEFAULT_KEY_VARIABLE, REGION_BASE_URLS, check_base_url

SECRET = "sk-live-4f1c9e0b7d2a"


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A project root without a config file."""
    return tmp_path


def write_config(root: Path, text: str, name: str = "synthflow.yaml") -> Path:
    path = root / name
    path.write_text(text)
    return path


def refusal(root: Path, environ: dict[str, str] | None = None) -> str:
    """The message of the ConfigError that loading must raise."""
    with pytest.raises(ConfigError) as caught:
        load_settings(environ or {}, root)
    return str(caught.value)


# --- defaults and precedence -----------------------------------------------------------------


def test_defaults_apply_without_file_or_variables(root: Path) -> None:
    settings = load_settings({}, root)

    assert settings.config_path is None
    assert settings.workspaces == ()
    assert settings.fetch == FetchSettings()
    assert settings.duckdb_path == root / "data" / "numbers.duckdb"


def test_default_config_file_at_root_is_read(root: Path) -> None:
    path = write_config(root, "workspaces:\n  - id: w1\n    name: Acme\n")

    settings = load_settings({}, root)

    assert settings.config_path == path
    assert [(w.id, w.name) for w in settings.workspaces] == [("w1", "Acme")]


def test_workspace_without_region_or_key_variable_gets_the_defaults(root: Path) -> None:
    write_config(root, "workspaces:\n  - id: w1\n")

    (workspace,) = load_settings({}, root).workspaces

    assert workspace.base_url == DEFAULT_BASE_URL
    assert workspace.api_key_env == DEFAULT_KEY_VARIABLE


def test_fetch_settings_come_from_the_file(root: Path) -> None:
    write_config(root, "fetch:\n  page_size: 250\n  concurrency: 3\n  max_retries: 2\n")

    fetch = load_settings({}, root).fetch

    assert (fetch.page_size, fetch.concurrency, fetch.max_retries) == (250, 3, 2)


def test_synthflow_config_names_the_file_to_read(root: Path, tmp_path_factory) -> None:
    elsewhere = write_config(tmp_path_factory.mktemp("etc"), "workspaces:\n  - id: w9\n", "x.yml")
    write_config(root, "workspaces:\n  - id: w1\n")

    settings = load_settings({"SYNTHFLOW_CONFIG": str(elsewhere)}, root)

    assert settings.config_path == elsewhere
    assert settings.workspace_ids == ["w9"]


def test_duckdb_path_variable_wins(root: Path) -> None:
    settings = load_settings({"SYNTHFLOW_DUCKDB_PATH": "/srv/numbers.duckdb"}, root)

    assert settings.duckdb_path == Path("/srv/numbers.duckdb")


def test_workspaces_variable_replaces_the_file_list(root: Path) -> None:
    write_config(root, "workspaces:\n  - id: w1\n  - id: w2\n")

    settings = load_settings({"SYNTHFLOW_WORKSPACES": "w2,w3"}, root)

    assert settings.workspace_ids == ["w2", "w3"]


def test_workspaces_variable_keeps_file_entries_region_and_key_variable(root: Path) -> None:
    write_config(
        root,
        "workspaces:\n"
        "  - id: w1\n    name: Acme EU\n    region: eu\n    api_key_env: KEY_EU\n"
        "  - id: w2\n    region: us\n",
    )

    by_id = {w.id: w for w in load_settings({"SYNTHFLOW_WORKSPACES": "w1,w3"}, root).workspaces}

    assert by_id["w1"].base_url == REGION_BASE_URLS["eu"]
    assert by_id["w1"].api_key_env == "KEY_EU"
    assert by_id["w1"].name == "Acme EU"
    assert by_id["w3"].base_url == DEFAULT_BASE_URL
    assert by_id["w3"].api_key_env == DEFAULT_KEY_VARIABLE


def test_workspaces_variable_ignores_surrounding_spaces(root: Path) -> None:
    settings = load_settings({"SYNTHFLOW_WORKSPACES": " w1 , w2"}, root)

    assert settings.workspace_ids == ["w1", "w2"]


def test_file_is_validated_even_when_workspaces_variable_overrides_it(root: Path) -> None:
    path = write_config(root, "workspaces:\n  - id: w1\n    region: mars\n")

    message = refusal(root, {"SYNTHFLOW_WORKSPACES": "w2"})

    assert str(path) in message
    assert "region" in message


@pytest.mark.parametrize("region", ["global", "us", "eu"])
def test_region_picks_its_cluster_base_url(root: Path, region: str) -> None:
    write_config(root, f"workspaces:\n  - id: w1\n    region: {region}\n")

    (workspace,) = load_settings(
        {"SYNTHFLOW_BASE_URL": "https://proxy.example/v2"}, root
    ).workspaces

    assert workspace.base_url == REGION_BASE_URLS[region]


def test_regions_are_the_documented_hosts() -> None:
    assert REGION_BASE_URLS == {
        "global": "https://api.synthflow.ai/v2",
        "us": "https://api.us.synthflow.ai/v2",
        "eu": "https://api.eu.synthflow.ai/v2",
    }


def test_base_url_variable_serves_workspaces_without_region(root: Path) -> None:
    write_config(
        root,
        "workspaces:\n  - id: plain\n  - id: in_eu\n    region: eu\n"
        "  - id: own\n    base_url: https://own.example/v2\n",
    )

    settings = load_settings({"SYNTHFLOW_BASE_URL": "http://127.0.0.1:8123/v2/"}, root)

    assert {w.id: w.base_url for w in settings.workspaces} == {
        "plain": "http://127.0.0.1:8123/v2",
        "in_eu": REGION_BASE_URLS["eu"],
        "own": "https://own.example/v2",
    }


# --- base URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "https://api.synthflow.ai/v2",
        "http://127.0.0.1:8080/v2",
        "http://localhost:8080/v2",
        "http://[::1]:8080/v2",
    ],
)
def test_https_and_loopback_http_are_accepted(url: str) -> None:
    assert check_base_url(url) == url


@pytest.mark.parametrize(
    "url",
    [
        "http://api.synthflow.ai/v2",
        "http://10.0.0.5/v2",
        "http://localhost.example.com/v2",
        "http://localhost@evil.example/v2",
        "ftp://api.synthflow.ai/v2",
        "api.synthflow.ai/v2",
    ],
)
def test_other_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="https://"):
        check_base_url(url)


def test_plain_http_base_url_variable_to_remote_host_is_refused(root: Path) -> None:
    message = refusal(root, {"SYNTHFLOW_BASE_URL": "http://api.synthflow.ai/v2"})

    assert "SYNTHFLOW_BASE_URL" in message
    assert "https://" in message


# --- bad files ---------------------------------------------------------------------------------

BAD_CONFIGS = {
    "misspelt key": (
        "workspaces:\n  - id: w1\n    regoin: us\n",
        ["w1", "'regoin'", "did you mean 'region'?"],
    ),
    "misspelt top-level key": ("workspace:\n  - id: w1\n", ["did you mean 'workspaces'?"]),
    "misspelt fetch key": ("fetch:\n  pagesize: 10\n", ["fetch", "did you mean 'page_size'?"]),
    "misspelt database key": (
        "database:\n  lock_timeout: 5\n",
        ["database", "did you mean 'lock_timeout_s'?"],
    ),
    "unknown key": ("fetch:\n  colour: blue\n", ["fetch", "'colour'", "remove it"]),
    "missing id": ("workspaces:\n  - name: Acme\n", ["workspaces.0", "id", "required"]),
    "empty id": ("workspaces:\n  - id: ''\n", ["workspaces.0", "id"]),
    "blank id": ("workspaces:\n  - id: '   '\n", ["workspaces.0", "empty"]),
    "duplicate id": (
        "workspaces:\n  - id: w1\n  - id: w2\n  - id: w1\n",
        ["w1", "twice", "keep one"],
    ),
    "unknown region": (
        "workspaces:\n  - id: w1\n    region: asia\n",
        ["w1", "region", "global, us, eu"],
    ),
    "region and base_url": (
        "workspaces:\n  - id: w1\n    region: us\n    base_url: https://x.example/v2\n",
        ["w1", "either region or base_url"],
    ),
    "zero page size": ("fetch:\n  page_size: 0\n", ["fetch.page_size", "greater than 0"]),
    "negative page size": ("fetch:\n  page_size: -5\n", ["fetch.page_size", "greater than 0"]),
    "zero concurrency": ("fetch:\n  concurrency: 0\n", ["fetch.concurrency", "greater than 0"]),
    "plain http to a remote host": (
        "workspaces:\n  - id: w1\n    base_url: http://api.example.com/v2\n",
        ["w1", "base_url", "https://"],
    ),
    "not a mapping": ("- w1\n- w2\n", ["mapping", "workspaces"]),
    "UI address not a web address": (
        "alerts:\n  dagster_url: dagster.internal:3000\n",
        ["alerts.dagster_url", "http://dagster.internal:3000"],
    ),
}


@pytest.mark.parametrize(("text", "expected"), BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_refused_naming_file_entry_and_fix(
    root: Path, text: str, expected: list[str]
) -> None:
    path = write_config(root, text)

    message = refusal(root)

    assert str(path) in message
    for fragment in expected:
        assert fragment in message


def test_invalid_yaml_is_refused_with_its_line(root: Path) -> None:
    path = write_config(root, "workspaces:\n  - id: w1\n   name: bad indent\n")

    message = refusal(root)

    assert str(path) in message
    assert "line 3" in message
    assert "YAML" in message


def test_config_file_that_is_not_utf8_is_refused_not_a_traceback(root: Path) -> None:
    path = root / "synthflow.yaml"
    path.write_bytes(b"workspaces:\n  - id: w1\n    name: Caf\xe9 Paris\n")

    message = refusal(root)

    assert str(path) in message


def test_config_variable_pointing_nowhere_is_refused(root: Path) -> None:
    missing = root / "nope" / "synthflow.yaml"

    message = refusal(root, {"SYNTHFLOW_CONFIG": str(missing)})

    assert "SYNTHFLOW_CONFIG" in message
    assert str(missing) in message
    assert "fix the path" in message


@pytest.mark.parametrize(
    ("value", "expected"),
    [("w1,,w2", "workspaces.1"), ("w1, ", "workspaces.1"), ("w1,w2,w1", "w1 is listed twice")],
    ids=["empty element", "trailing blank", "duplicate"],
)
def test_bad_workspaces_variable_is_refused(root: Path, value: str, expected: str) -> None:
    message = refusal(root, {"SYNTHFLOW_WORKSPACES": value})

    assert message.startswith("SYNTHFLOW_WORKSPACES")
    assert "comma-separated" in message
    assert expected in message


# --- keys --------------------------------------------------------------------------------------


def test_missing_key_variable_is_named(root: Path, monkeypatch) -> None:
    write_config(root, "workspaces:\n  - id: w1\n    api_key_env: SYNTHFLOW_KEY_ACME\n")
    monkeypatch.delenv("SYNTHFLOW_KEY_ACME", raising=False)
    settings = load_settings({}, root)

    with pytest.raises(ConfigError) as caught:
        settings.workspaces[0].api_key()

    assert "SYNTHFLOW_KEY_ACME" in str(caught.value)
    assert "w1" in str(caught.value)


def test_key_comes_from_the_workspace_variable(root: Path, monkeypatch) -> None:
    write_config(root, "workspaces:\n  - id: w1\n    api_key_env: SYNTHFLOW_KEY_ACME\n")
    monkeypatch.setenv("SYNTHFLOW_KEY_ACME", f"  {SECRET}\n")
    settings = load_settings({}, root)

    assert settings.workspaces[0].api_key() == SECRET


def test_the_resource_reads_a_workspace_key_without_reading_the_file_again(root, monkeypatch):
    """Once per workspace and run: a thousand workspaces must not parse the file a thousand
    times. The file is gone by the time the key is asked for."""
    from pipelines.defs.resources import SynthflowResource

    config = write_config(root, "workspaces:\n  - id: w1\n    api_key_env: SYNTHFLOW_KEY_ACME\n")
    monkeypatch.setenv("SYNTHFLOW_KEY_ACME", SECRET)
    resource = SynthflowResource(config_file=str(config))
    workspace = resource.settings().workspaces[0]
    config.unlink()

    assert resource.api_key_for(workspace) == SECRET


def test_unknown_key_holding_a_secret_is_refused_without_the_secret(root: Path) -> None:
    write_config(root, f"workspaces:\n  - id: w1\n    api_key: {SECRET}\n")

    message = refusal(root)

    assert "api_key" in message
    assert SECRET not in message


def test_yaml_error_next_to_a_secret_does_not_quote_it(root: Path) -> None:
    write_config(root, f"workspaces:\n  - id: w1\n    token: '{SECRET}\n  - id: w2\n")

    assert SECRET not in refusal(root)


def test_wrongly_typed_value_holding_a_secret_is_not_quoted(root: Path) -> None:
    write_config(root, f"workspaces:\n  - id: w1\n    region: {SECRET}\n")

    assert SECRET not in refusal(root)


def test_key_pasted_as_key_variable_name_is_refused_without_echoing_it(root: Path) -> None:
    """A key pasted into api_key_env must not come back in an error (which reaches logs)."""
    write_config(root, f"workspaces:\n  - id: w1\n    api_key_env: {SECRET}\n")

    message = refusal(root)

    assert "api_key_env" in message
    assert "w1" in message
    assert SECRET not in message


# --- selecting workspaces ------------------------------------------------------------------------


def test_select_returns_named_workspaces_once_in_the_order_asked(root: Path) -> None:
    write_config(root, "workspaces:\n  - id: w1\n  - id: w2\n  - id: w3\n")
    settings = load_settings({}, root)

    assert [w.id for w in settings.select(["w3", "w1", "w3"])] == ["w3", "w1"]


def test_select_refuses_an_unconfigured_workspace_naming_the_file(root: Path) -> None:
    path = write_config(root, "workspaces:\n  - id: w1\n")
    settings = load_settings({}, root)

    with pytest.raises(ConfigError) as caught:
        settings.select(["w1", "w9"])

    assert "w9" in str(caught.value)
    assert str(path) in str(caught.value)


def test_select_names_the_variable_when_it_lists_the_workspaces(root: Path) -> None:
    write_config(root, "workspaces:\n  - id: w1\n  - id: w2\n")
    settings = load_settings({"SYNTHFLOW_WORKSPACES": "w1"}, root)

    with pytest.raises(ConfigError) as caught:
        settings.select(["w2"])

    assert "Add it to SYNTHFLOW_WORKSPACES first" in str(caught.value)


def test_alerts_link_to_the_ui_and_the_webhook_variable_keeps_it(root: Path) -> None:
    write_config(root, "alerts:\n  dagster_url: http://dagster.internal:3000/\n")
    settings = load_settings({"SYNTHFLOW_ALERT_WEBHOOK_URL": "https://hooks.example.com/x"}, root)
    assert settings.alerts.dagster_url == "http://dagster.internal:3000"
    assert settings.alerts.webhook_url == "https://hooks.example.com/x"


WEBHOOK_WITHOUT_SCHEME = "hooks.slack.com/services/T000/B000/Webhook-Secret-Token"


def test_a_bad_webhook_address_is_refused_without_repeating_it(root: Path) -> None:
    write_config(root, f"alerts:\n  webhook_url: {WEBHOOK_WITHOUT_SCHEME}\n")
    from_the_file = refusal(root)
    (root / "synthflow.yaml").unlink()
    from_the_variable = refusal(root, {"SYNTHFLOW_ALERT_WEBHOOK_URL": WEBHOOK_WITHOUT_SCHEME})

    for message in (from_the_file, from_the_variable):
        assert (
            "Webhook-Secret-Token" not in message and "hooks.slack.com/services/T000" not in message
        )
        assert "https://" in message and "api.synthflow.ai" not in message
    assert "alerts.webhook_url" in from_the_file
    assert "SYNTHFLOW_ALERT_WEBHOOK_URL" in from_the_variable


def test_a_memory_limit_is_a_size_or_refused_with_an_example(root: Path) -> None:
    write_config(root, "database:\n  memory_limit: 512MB\n")
    assert load_settings({}, root).database.memory_limit == "512MB"

    write_config(root, "database:\n  memory_limit: lots\n")
    assert "database.memory_limit: 'lots' is not a size such as 512MB or 2GB" in refusal(root)


def test_a_workspace_is_late_after_two_schedule_intervals(root: Path) -> None:
    write_config(root, 'schedule:\n  cron: "0 6 * * 1-5"\n')
    # Weekdays at 06:00: the longest gap, Friday to Monday, is three days.
    assert load_settings({}, root).schedule.late_after() == timedelta(days=6)


LAKE = {
    "SYNTHFLOW_DUCKLAKE_CATALOG": "dbname=synthflow host=db.internal user=synthflow",
    "SYNTHFLOW_DUCKLAKE_DATA_PATH": "/mnt/lake/",
}


def test_the_ducklake_variables_make_the_warehouse_a_ducklake(root: Path) -> None:
    settings = load_settings(LAKE, root)

    assert settings.warehouse == DuckLake(
        catalog="dbname=synthflow host=db.internal user=synthflow", data_path="/mnt/lake/"
    )
    assert load_settings({}, root).warehouse == root / "data" / "numbers.duckdb"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        (
            {"SYNTHFLOW_DUCKLAKE_CATALOG": LAKE["SYNTHFLOW_DUCKLAKE_CATALOG"]},
            "SYNTHFLOW_DUCKLAKE_DATA_PATH",
        ),
        ({"SYNTHFLOW_DUCKLAKE_DATA_PATH": "/mnt/lake/"}, "SYNTHFLOW_DUCKLAKE_CATALOG"),
        (LAKE | {"SYNTHFLOW_DUCKDB_PATH": "/srv/numbers.duckdb"}, "SYNTHFLOW_DUCKDB_PATH"),
    ],
)
def test_a_half_named_or_doubly_named_warehouse_is_refused_naming_the_variable(
    root: Path, environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ, root)


@pytest.mark.parametrize(
    "catalog",
    [
        "dbname=synthflow host=db user=synthflow PassWord = hunter2-not-real",
        "postgresql://synthflow:hunter2-not-real@db.internal:5432/synthflow",
    ],
)
def test_a_catalog_holding_a_password_is_refused_without_repeating_it(
    root: Path, catalog: str
) -> None:
    with pytest.raises(ConfigError, match="PGPASSWORD") as refused:
        load_settings(LAKE | {"SYNTHFLOW_DUCKLAKE_CATALOG": catalog}, root)

    assert "hunter2" not in str(refused.value)


def test_a_catalog_address_without_a_password_is_taken(root: Path) -> None:
    catalog = "postgresql://synthflow@db.internal:5432/synthflow"

    assert load_settings(LAKE | {"SYNTHFLOW_DUCKLAKE_CATALOG": catalog}, root).ducklake
