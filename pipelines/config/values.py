"""What one setting accepts: the checks pydantic runs on a single value, each refusal naming the
fix, and the hosts and names a setting left out defaults to."""

import ipaddress
import re
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import ValidationInfo

DEFAULT_BASE_URL = "https://api.synthflow.ai/v2"
REGION_BASE_URLS = {
    "global": DEFAULT_BASE_URL,
    "us": "https://api.us.synthflow.ai/v2",
    "eu": "https://api.eu.synthflow.ai/v2",
}
DEFAULT_KEY_VARIABLE = "SYNTHFLOW_API_KEY"


def secure(url: str) -> bool:
    """https, or plain http to this machine (the simulator); with a host either way."""
    parts = urlsplit(url)
    try:
        loopback = ipaddress.ip_address(parts.hostname or "").is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    return bool(parts.hostname) and (
        parts.scheme == "https" or (parts.scheme == "http" and loopback)
    )


def check_base_url(url: str) -> str:
    """Refuse anything but https, except plain http to this machine (the simulator)."""
    if secure(url):
        return url.rstrip("/")
    raise ValueError(
        f"use an https:// URL such as {DEFAULT_BASE_URL} for {urlsplit(url).hostname or url!r}; "
        "plain http:// is only allowed to loopback (127.0.0.1, localhost)"
    )


def webhook_address(url: str) -> str:
    """A webhook address holds its secret in the path: refused without repeating it."""
    if secure(url):
        return url
    raise ValueError(
        "must be the webhook's whole https:// address, as the chat service gives it "
        "(e.g. https://hooks.slack.com/services/...); plain http:// only to loopback. "
        "The address is not repeated here: it holds the webhook's secret"
    )


def region_host(url: str | None, info: ValidationInfo) -> str:
    """The entry's base_url, else its region's host, else SYNTHFLOW_BASE_URL's (the context)."""
    region = info.data.get("region")
    if url and region:
        raise ValueError("give either region or base_url, not both")
    return url or REGION_BASE_URLS.get(region) or info.context or DEFAULT_BASE_URL


def key_variable(name: str | None) -> str:
    # Never repeat the value: a key pasted here by mistake must not reach any message.
    if name is None or re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
        return name or DEFAULT_KEY_VARIABLE
    raise ValueError(
        "must name an environment variable (e.g. SYNTHFLOW_API_KEY_EU) that holds the key, "
        "not hold the key itself"
    )


def cron(value: str) -> str:
    if not croniter.is_valid(value):
        raise ValueError(f"{value!r} is not a cron expression such as '0 6 * * *' (daily)")
    return value


def time_zone(key: str) -> str:
    try:
        return ZoneInfo(key).key
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{key!r} is not an IANA time zone such as UTC or Europe/Berlin") from None


def web_address(url: str) -> str:
    parts = urlsplit(url)
    if parts.scheme in ("http", "https") and parts.hostname:
        return url.rstrip("/")
    raise ValueError(f"{url!r} is not a web address such as http://dagster.internal:3000")


def memory_size(size: str) -> str:
    """A size as DuckDB's memory_limit takes it: a number and a unit (512MB, 2GB, 1.5GiB)."""
    if re.fullmatch(r"\d+(\.\d+)?\s*([KMGT]i?B)", size.strip(), re.IGNORECASE):
        return size.strip()
    raise ValueError(f"{size!r} is not a size such as 512MB or 2GB")
