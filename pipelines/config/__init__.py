"""Configuration: environment variables over the YAML file, as shared/design.md promises.
Every refusal names the file or the variable, the entry and the fix."""

import difflib
import os
import re
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo

import yaml
from croniter import croniter
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from pipelines.config import values
from pipelines.config.values import DEFAULT_BASE_URL, check_base_url
from pipelines.user_errors import UserError

# The fix shown in place of pydantic's own words; each error type here has one field.
FIXES = {
    "missing": "an id is required: add the Synthflow workspace ID",
    "extra_forbidden": "unknown key {key!r}; {suggestion}",
    "literal_error": "region must be one of global, us, eu",
    # Dagster partition keys cannot hold these; a workspace ID never does.
    "string_pattern_mismatch": "the workspace id is empty or holds | , [ ] or white space, "
    "which no workspace ID does; put the Synthflow workspace ID here",
}


class ConfigError(UserError):
    """The configuration cannot be used; the message says where and how to fix it."""


Url = Annotated[str, AfterValidator(check_base_url)]
Positive = Annotated[float, Field(gt=0)]


class _Strict(BaseModel):
    # validate_default: what a workspace leaves out, its validators fill in.
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class Workspace(_Strict):
    """A workspace, from the config file or SYNTHFLOW_WORKSPACES: its host and key variable."""

    id: Annotated[str, Field(pattern=r"^\s*[^|,\[\]\s]+\s*$"), AfterValidator(str.strip)]
    name: str | None = None
    region: Literal["global", "us", "eu"] | None = None
    base_url: Annotated[Url | None, AfterValidator(values.region_host)] = None
    api_key_env: Annotated[str | None, AfterValidator(values.key_variable)] = None

    @property
    def label(self) -> str:
        return f"{self.id} ({self.name})" if self.name else self.id

    def api_key(self) -> str:
        """The key from its variable, read now; a missing one is a configuration error."""
        if key := os.environ.get(self.api_key_env, "").strip():
            return key
        raise ConfigError(
            f"workspace {self.label}: the environment variable {self.api_key_env} "
            f"is not set; export it with the workspace's API key (Synthflow settings, API keys)"
        )


def _unique_ids(workspaces: tuple[Workspace, ...]) -> tuple[Workspace, ...]:
    ids = [workspace.id for workspace in workspaces]
    if twice := next((wid for i, wid in enumerate(ids) if wid in ids[:i]), None):
        raise ValueError(f"workspace id {twice} is listed twice; keep one entry")
    return workspaces


class FetchSettings(_Strict):
    page_size: Annotated[int, Field(gt=0, le=10_000)] = 100
    concurrency: Annotated[int, Field(gt=0, le=256)] = 8
    # Per host and key. None: found (budget.py) from 40/s up to max_requests_per_second; 429 halves.
    requests_per_second: Positive | None = None
    max_requests_per_second: Positive = 200.0
    timeout_s: Positive = 30.0  # one whole request, body included
    max_response_mb: Positive = 32.0  # one answer's body, decompressed
    max_retries: Annotated[int, Field(ge=0, le=20)] = 6
    max_backoff_s: Positive = 60.0
    listing_attempts: Annotated[int, Field(gt=0, le=10)] = 3


class DatabaseSettings(_Strict):
    lock_timeout_s: Annotated[float, Field(ge=0)] = 60.0
    # The most DuckDB holds in memory while writing (the rest spills to disk); None: DuckDB's
    # own, 80 % of the machine's. A million-number run peaked at ~1.1 GB, ~0.64 GB at 300MB.
    memory_limit: Annotated[str, AfterValidator(values.memory_size)] | None = None


class ScheduleSettings(_Strict):
    cron: Annotated[str, AfterValidator(values.cron)] = "0 6 * * *"
    timezone: Annotated[str, AfterValidator(values.time_zone)] = "UTC"

    def interval(self) -> timedelta:
        """The longest gap between two consecutive ticks over the next week of ticks."""
        ticks = croniter(self.cron, datetime.now(ZoneInfo(self.timezone)))
        times = [ticks.get_next(datetime) for _ in range(8)]
        return max(times[i + 1] - times[i] for i in range(len(times) - 1))

    def late_after(self) -> timedelta:
        """A workspace whose newest snapshot is older than this is late: two intervals."""
        return 2 * self.interval()


class AlertSettings(_Strict):
    # Where alerts are posted; none: no alerts.
    webhook_url: Annotated[str, AfterValidator(values.webhook_address)] | None = None
    dagster_url: Annotated[str, AfterValidator(values.web_address)] | None = None  # links in alerts


class ConfigFile(_Strict):
    workspaces: Annotated[tuple[Workspace, ...], AfterValidator(_unique_ids)] = ()
    fetch: FetchSettings = FetchSettings()
    database: DatabaseSettings = DatabaseSettings()
    schedule: ScheduleSettings = ScheduleSettings()
    alerts: AlertSettings = AlertSettings()


DUCKLAKE_VARIABLES = ("SYNTHFLOW_DUCKLAKE_CATALOG", "SYNTHFLOW_DUCKLAKE_DATA_PATH")


class DuckLake(BaseModel):
    """A DuckLake warehouse: its catalog, a PostgreSQL database named by libpq keywords (the
    password comes from PGPASSWORD or a pgpass file, never from here), and the folder or bucket
    its Parquet files are written to."""

    model_config = ConfigDict(frozen=True)

    catalog: str
    data_path: str

    def __str__(self) -> str:
        return f"the DuckLake warehouse with its data at {self.data_path}"


class Settings(ConfigFile):
    """The file's settings with the environment variables applied: what a run uses."""

    config_path: Path | None
    duckdb_path: Path
    ducklake: DuckLake | None = None  # set: the warehouse is this DuckLake, not the file
    workspaces_from: str  # where the list of workspaces came from: named where it must change

    @property
    def warehouse(self) -> Path | DuckLake:
        return self.ducklake or self.duckdb_path

    @property
    def workspace_ids(self) -> list[str]:
        return [workspace.id for workspace in self.workspaces]

    @property
    def labels(self) -> dict[str, str]:
        """Each workspace's ID with its name, as messages name it (`Workspace.label`)."""
        return {workspace.id: workspace.label for workspace in self.workspaces}

    def select(self, workspace_ids: list[str]) -> tuple[Workspace, ...]:
        """The named workspaces, once each in the order asked, refusing any not configured."""
        known = {workspace.id: workspace for workspace in self.workspaces}
        if unknown := [wid for wid in workspace_ids if wid not in known]:
            raise ConfigError(
                f"workspace {', '.join(unknown)} is not configured; configured: "
                f"{', '.join(known) or 'none'}. "
                f"Add it to {self.workspaces_from} first."
            )
        return tuple(known[wid] for wid in dict.fromkeys(workspace_ids))


def _suggestion(loc: tuple) -> str:
    """`did you mean` the key of that section closest to the unknown one, if one is close."""
    fields = ConfigFile.model_fields
    if len(loc) > 1:
        section = Workspace if loc[0] == "workspaces" else fields[loc[0]].annotation
        fields = section.model_fields
    close = difflib.get_close_matches(str(loc[-1]), list(fields), n=1)
    return f"did you mean {close[0]!r}?" if close else "remove it or check its spelling"


def _validated(document: dict, heading: str, base_url: str) -> ConfigFile:
    """The document as a ConfigFile, or a ConfigError naming each problem's key and fix."""
    try:
        return ConfigFile.model_validate(document, context=base_url)
    except ValidationError as error:
        problems = error.errors()
    lines = [heading]
    for problem in problems:
        loc = problem["loc"]
        where = ".".join(str(part) for part in loc)
        if loc[:1] == ("workspaces",) and len(loc) > 1 and isinstance(document["workspaces"], list):
            entry = document["workspaces"][loc[1]]
            if isinstance(entry, dict) and entry.get("id"):
                where += f" (workspace {entry['id']})"
        fix = FIXES.get(problem["type"])
        message = (
            fix.format(key=loc[-1], suggestion=_suggestion(loc))
            if fix
            else problem["msg"].removeprefix("Value error, ")
        )
        lines.append(f"  {where}: {message}")
    raise ConfigError("\n".join(lines))


def _read_file(named: str | None, root: Path, base_url: str) -> tuple[Path | None, ConfigFile]:
    """The file SYNTHFLOW_CONFIG names, else synthflow.yaml at the root if there is one."""
    path = Path(named or root / "synthflow.yaml")
    if not named and not path.is_file():
        return None, ConfigFile()
    try:
        document = yaml.safe_load(path.read_text()) or {}
    except UnicodeDecodeError as error:
        problem = f"is not UTF-8 text (byte {error.start}); save the file as UTF-8"
    except OSError as error:
        problem = f"cannot be read ({error.strerror}); fix the path or unset SYNTHFLOW_CONFIG"
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = f"is not valid YAML{where}; fix the syntax"
    else:
        if isinstance(document, dict):
            return path, _validated(document, f"{path}: invalid configuration", base_url)
        problem = "must be a mapping with 'workspaces' and 'fetch' keys"
    raise ConfigError(f"{path}: {problem}")


def _url_variable(
    environ: Mapping[str, str], name: str, check: Callable[[str], str] = check_base_url
) -> str | None:
    try:
        return check(environ[name]) if environ.get(name) else None
    except ValueError as error:
        raise ConfigError(f"{name}: {error}") from None


def _ducklake(environ: Mapping[str, str]) -> DuckLake | None:
    """The DuckLake the variables name, if they name one; its catalog without a password."""
    catalog, data_path = (environ.get(name, "").strip() for name in DUCKLAKE_VARIABLES)
    if not catalog and not data_path:
        return None
    if not catalog or not data_path:
        missing = DUCKLAKE_VARIABLES[1] if catalog else DUCKLAKE_VARIABLES[0]
        raise ConfigError(
            f"{missing} is not set: a DuckLake warehouse needs both its catalog (libpq keywords "
            "such as 'dbname=synthflow host=db user=synthflow') and its data path (a folder "
            "every worker mounts, or a bucket); set it, or unset the other to use the DuckDB file"
        )
    # libpq's keyword form (password=...) or its URI form (postgresql://user:secret@host/db)
    if re.search(r"\bpassword\s*=|://[^/@]*:[^/@]*@", catalog, re.IGNORECASE):
        raise ConfigError(
            "SYNTHFLOW_DUCKLAKE_CATALOG holds a password, which would then show wherever the "
            "catalog is named; remove it and give it in PGPASSWORD or a pgpass file"
        )
    if environ.get("SYNTHFLOW_DUCKDB_PATH"):
        raise ConfigError(
            "SYNTHFLOW_DUCKDB_PATH and SYNTHFLOW_DUCKLAKE_CATALOG are both set: the warehouse is "
            "the DuckDB file or a DuckLake, not both; unset one"
        )
    return DuckLake(catalog=catalog, data_path=data_path)


def load_settings(environ: Mapping[str, str] = os.environ, root: Path | None = None) -> Settings:
    """Read the file (when there is one, always validated) and apply the variables over it."""
    root = root or Path.cwd()
    base_url = _url_variable(environ, "SYNTHFLOW_BASE_URL") or DEFAULT_BASE_URL
    path, file = _read_file(environ.get("SYNTHFLOW_CONFIG"), root, base_url)
    workspaces = file.workspaces
    if listed := environ.get("SYNTHFLOW_WORKSPACES"):
        by_id = {workspace.id: workspace for workspace in file.workspaces}  # keep their settings
        workspaces = _validated(
            {"workspaces": [by_id.get(i.strip(), {"id": i}) for i in listed.split(",")]},
            "SYNTHFLOW_WORKSPACES: must be comma-separated workspace IDs, each once and none empty",
            base_url,
        ).workspaces
    webhook = _url_variable(environ, "SYNTHFLOW_ALERT_WEBHOOK_URL", values.webhook_address)
    webhook_url = webhook or file.alerts.webhook_url
    alerts = file.alerts.model_copy(update={"webhook_url": webhook_url})
    return Settings(
        **dict(file) | {"workspaces": workspaces, "alerts": alerts},
        config_path=path,
        duckdb_path=Path(environ.get("SYNTHFLOW_DUCKDB_PATH") or root / "data/numbers.duckdb"),
        ducklake=_ducklake(environ),
        workspaces_from="SYNTHFLOW_WORKSPACES" if listed else str(path or root / "synthflow.yaml"),
    )
