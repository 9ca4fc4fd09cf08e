"""Configuration: environment variables over the YAML file, validated at load.

The contract is in shared/design.md ("Configuration"). Every refusal names the file,
the entry and the fix, so a person can act on it without reading code.
"""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipelines.user_errors import UserError

DEFAULT_BASE_URL = "https://api.synthflow.ai/v2"
REGION_BASE_URLS = {
    "global": DEFAULT_BASE_URL,
    "us": "https://api.us.synthflow.ai/v2",
    "eu": "https://api.eu.synthflow.ai/v2",
}
DEFAULT_CONFIG_FILE = "synthflow.yaml"
DEFAULT_DUCKDB_PATH = "data/numbers.duckdb"
DEFAULT_KEY_VARIABLE = "SYNTHFLOW_API_KEY"
# Dagster partition keys cannot hold these; a workspace ID never does.
FORBIDDEN_ID_CHARACTERS = set("|,[]") | {" ", "\t", "\n"}
VARIABLE_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class ConfigError(UserError):
    """The configuration cannot be used; the message says where and how to fix it."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_base_url(url: str) -> str:
    """Refuse anything but https, except plain http to this machine (the simulator)."""
    parts = urlsplit(url)
    if parts.scheme == "https" and parts.hostname:
        return url.rstrip("/")
    if parts.scheme == "http" and parts.hostname and is_loopback(parts.hostname):
        return url.rstrip("/")
    if parts.scheme == "http":
        raise ValueError(
            f"plain http:// is only allowed to loopback (127.0.0.1, localhost); use https:// for "
            f"{parts.hostname}"
        )
    raise ValueError(f"{url!r} is not an https:// URL such as {DEFAULT_BASE_URL}")


class WorkspaceConfig(_Strict):
    """One workspace entry of the config file."""

    id: Annotated[str, Field(min_length=1)]
    name: str | None = None
    region: Literal["global", "us", "eu"] | None = None
    base_url: str | None = None
    api_key_env: str | None = None

    @field_validator("id")
    @classmethod
    def _id_is_usable(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the workspace id is empty")
        bad = sorted(FORBIDDEN_ID_CHARACTERS & set(value))
        if bad:
            raise ValueError(f"the workspace id contains {bad!r}, which no workspace ID has")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _names_a_variable(cls, value: str | None) -> str | None:
        # Never repeat the value: a key pasted here by mistake must not reach any message.
        if value is not None and not VARIABLE_NAME.match(value):
            raise ValueError(
                "must name an environment variable (e.g. SYNTHFLOW_API_KEY_EU) that holds the "
                "key, not hold the key itself"
            )
        return value

    @field_validator("base_url")
    @classmethod
    def _base_url_is_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)

    @model_validator(mode="after")
    def _one_way_to_the_host(self) -> WorkspaceConfig:
        if self.region and self.base_url:
            raise ValueError("give either region or base_url, not both")
        return self


class FetchSettings(_Strict):
    """How listings are read. Every key optional in the file."""

    page_size: Annotated[int, Field(gt=0, le=10_000)] = 100
    concurrency: Annotated[int, Field(gt=0, le=256)] = 8
    # Per host and key. None: found (budget.py), from 20 a second up to max_requests_per_second,
    # halved on 429; a number: kept to, halved on 429 (max_requests_per_second plays no part).
    requests_per_second: Annotated[float, Field(gt=0)] | None = None
    max_requests_per_second: Annotated[float, Field(gt=0)] = 200.0
    timeout_s: Annotated[float, Field(gt=0)] = 30.0  # one whole request, body included
    max_response_mb: Annotated[float, Field(gt=0)] = 32.0  # one answer's body, decompressed
    max_retries: Annotated[int, Field(ge=0, le=20)] = 6
    max_backoff_s: Annotated[float, Field(gt=0)] = 60.0
    listing_attempts: Annotated[int, Field(gt=0, le=10)] = 3


class DatabaseSettings(_Strict):
    lock_timeout_s: Annotated[float, Field(ge=0)] = 60.0


class ScheduleSettings(_Strict):
    cron: str = "0 6 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _cron_is_valid(cls, value: str) -> str:
        if not croniter.is_valid(value):
            raise ValueError(f"{value!r} is not a cron expression such as '0 6 * * *' (daily)")
        return value

    @field_validator("timezone")
    @classmethod
    def _timezone_exists(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(
                f"{value!r} is not an IANA time zone such as UTC or Europe/Berlin"
            ) from None
        return value

    def interval(self) -> timedelta:
        """The longest gap between two consecutive ticks over the next week of ticks."""
        ticks = croniter(self.cron, datetime.now(ZoneInfo(self.timezone)))
        times = [ticks.get_next(datetime) for _ in range(8)]
        return max(later - earlier for earlier, later in itertools.pairwise(times))


class AlertSettings(_Strict):
    """Where a failed run is announced (Slack-compatible JSON); off when no URL is set."""

    webhook_url: str | None = None

    @field_validator("webhook_url")
    @classmethod
    def _webhook_is_safe(cls, value: str | None) -> str | None:
        return None if value is None else check_base_url(value)


class ConfigFile(_Strict):
    workspaces: list[WorkspaceConfig] = []
    fetch: FetchSettings = FetchSettings()
    database: DatabaseSettings = DatabaseSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    alerts: AlertSettings = AlertSettings()

    @field_validator("workspaces")
    @classmethod
    def _ids_are_unique(cls, workspaces: list[WorkspaceConfig]) -> list[WorkspaceConfig]:
        seen: set[str] = set()
        for workspace in workspaces:
            if workspace.id in seen:
                raise ValueError(f"workspace id {workspace.id} is listed twice; keep one entry")
            seen.add(workspace.id)
        return workspaces


class Workspace(_Strict):
    """A workspace as the pipeline uses it: where to call and which variable holds its key."""

    id: str
    name: str | None
    base_url: str
    api_key_env: str

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id


class Settings(_Strict):
    config_path: Path | None
    workspaces: tuple[Workspace, ...]
    fetch: FetchSettings
    database: DatabaseSettings
    schedule: ScheduleSettings
    alerts: AlertSettings
    duckdb_path: Path

    @property
    def workspace_ids(self) -> list[str]:
        return [workspace.id for workspace in self.workspaces]

    def select(self, workspace_ids: list[str]) -> tuple[Workspace, ...]:
        """The named workspaces, refusing any that is not configured."""
        known = {workspace.id: workspace for workspace in self.workspaces}
        unknown = [wid for wid in workspace_ids if wid not in known]
        if unknown:
            raise ConfigError(
                f"workspace {', '.join(unknown)} is not configured; configured: "
                f"{', '.join(known) or 'none'}. Add it to {self._source()} first."
            )
        return tuple(known[wid] for wid in dict.fromkeys(workspace_ids))

    def api_key(self, workspace: Workspace) -> str:
        """The workspace's key from its variable; a missing one is a configuration error."""
        key = os.environ.get(workspace.api_key_env, "").strip()
        if not key:
            raise ConfigError(
                f"workspace {workspace.label}: the environment variable {workspace.api_key_env} "
                f"is not set; export it with the workspace's API key (Synthflow settings, API keys)"
            )
        return key

    def _source(self) -> str:
        return str(self.config_path) if self.config_path else "SYNTHFLOW_WORKSPACES"


def _describe(error: ValidationError, document: dict) -> str:
    lines = []
    for problem in error.errors():
        location = problem["loc"]
        where = ".".join(str(part) for part in location) or "(top level)"
        if len(location) >= 2 and location[0] == "workspaces" and isinstance(location[1], int):
            entries = document.get("workspaces") or []
            entry = entries[location[1]] if location[1] < len(entries) else None
            if isinstance(entry, dict) and entry.get("id"):
                where += f" (workspace {entry['id']})"
        message = problem["msg"].removeprefix("Value error, ")
        if problem["type"] == "missing" and location[-1] == "id":
            message = "an id is required: add the Synthflow workspace ID"
        elif problem["type"] == "string_too_short" and location[-1] == "id":
            message = "the workspace id is empty; put the Synthflow workspace ID here"
        elif problem["type"] == "extra_forbidden":
            message = f"unknown key {location[-1]!r}; remove it or check its spelling"
        elif problem["type"] == "literal_error" and location[-1] == "region":
            message = "region must be one of global, us, eu"
        lines.append(f"  {where}: {message}")
    return "\n".join(lines)


def _read_file(path: Path) -> ConfigFile:
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"{path}: is not UTF-8 text (byte {error.start}); save the file as UTF-8"
        ) from None
    except OSError as error:
        raise ConfigError(
            f"{path}: cannot be read ({error.strerror}); check SYNTHFLOW_CONFIG"
        ) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}: is not valid YAML{where}; fix the syntax") from None
    if not isinstance(document, dict):
        raise ConfigError(f"{path}: must be a mapping with 'workspaces' and 'fetch' keys")
    try:
        return ConfigFile.model_validate(document)
    except ValidationError as error:
        raise ConfigError(f"{path}: invalid configuration\n{_describe(error, document)}") from None


def _config_path(environ: Mapping[str, str], root: Path) -> Path | None:
    named = environ.get("SYNTHFLOW_CONFIG")
    if named:
        path = Path(named)
        if not path.is_file():
            raise ConfigError(
                f"SYNTHFLOW_CONFIG names {path}, which does not exist; fix the path or unset it"
            )
        return path
    default = root / DEFAULT_CONFIG_FILE
    return default if default.is_file() else None


def load_settings(environ: Mapping[str, str] | None = None, root: Path | None = None) -> Settings:
    """Read the file (when there is one, always validated) and apply the variables over it."""
    environ = os.environ if environ is None else environ
    root = Path.cwd() if root is None else root
    path = _config_path(environ, root)
    file = _read_file(path) if path else ConfigFile()

    try:
        default_base_url = check_base_url(environ.get("SYNTHFLOW_BASE_URL") or DEFAULT_BASE_URL)
    except ValueError as error:
        raise ConfigError(f"SYNTHFLOW_BASE_URL: {error}") from None

    entries = file.workspaces
    if environ.get("SYNTHFLOW_WORKSPACES"):
        by_id = {entry.id: entry for entry in file.workspaces}
        try:
            listed = ConfigFile.model_validate(
                {"workspaces": [{"id": wid} for wid in environ["SYNTHFLOW_WORKSPACES"].split(",")]}
            ).workspaces
        except ValidationError as error:
            raise ConfigError(
                "SYNTHFLOW_WORKSPACES: must be comma-separated workspace IDs, each once and "
                f"none empty\n{_describe(error, {})}"
            ) from None
        entries = [by_id.get(entry.id, entry) for entry in listed]

    workspaces = tuple(
        Workspace(
            id=entry.id,
            name=entry.name,
            base_url=entry.base_url
            or (REGION_BASE_URLS[entry.region] if entry.region else default_base_url),
            api_key_env=entry.api_key_env or DEFAULT_KEY_VARIABLE,
        )
        for entry in entries
    )
    return Settings(
        config_path=path,
        workspaces=workspaces,
        fetch=file.fetch,
        database=file.database,
        schedule=file.schedule,
        alerts=AlertSettings(
            webhook_url=environ.get("SYNTHFLOW_ALERT_WEBHOOK_URL") or file.alerts.webhook_url
        ),
        duckdb_path=Path(environ.get("SYNTHFLOW_DUCKDB_PATH") or root / DEFAULT_DUCKDB_PATH),
    )
