"""Typed errors of the Synthflow client: each names the workspace, what Synthflow said and what
to do, and none holds the API key (an error body may echo the request's headers)."""

from __future__ import annotations

import json
from dataclasses import KW_ONLY, dataclass

import httpx

from pipelines.config.values import DEFAULT_KEY_VARIABLE


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, its body whole and decompressed."""

    status: int
    reason_phrase: str
    headers: httpx.Headers
    body: bytes


def redact(text: str, key: str) -> str:
    """`text` with every occurrence of the key replaced."""
    return text.replace(key, "[redacted]") if key else text


@dataclass(eq=False)
class SynthflowError(Exception):
    """A workspace's listing could not be read."""

    workspace_id: str
    message: str
    _: KW_ONLY
    status: int | None = None
    description: str | None = None
    request_id: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        parts = [f"workspace {self.workspace_id}: {self.message}"]
        if self.description:
            parts.append(f"Synthflow says: {self.description}")
        if self.request_id:
            parts.append(f"request ID {self.request_id}")
        text = "; ".join(parts)
        return f"{text}. {self.fix}" if self.fix else text


class WorkspaceNotFoundError(SynthflowError):
    """400: the API does not know the workspace (or the ID is malformed)."""


class AuthenticationError(SynthflowError):
    """401/403: the key is missing or rejected for this workspace."""


class RequestRejectedError(SynthflowError):
    """Another 4xx that retrying cannot fix (404, 422, ...)."""


class UnavailableError(SynthflowError):
    """429, 5xx, timeouts or dropped connections that outlasted every retry."""


class MalformedResponseError(SynthflowError):
    """Answers that kept coming back unreadable or not shaped like a listing page."""


class IncompleteListingError(SynthflowError):
    """Every read of the listing disagreed with itself; nothing is stored."""


def _problem(item: dict) -> str:
    """One entry of a validation error list: where (its `loc`, when a list), then what."""
    where = item.get("loc")
    return f"{'.'.join(map(str, where)) if isinstance(where, list) else '?'}: {item.get('msg')}"


def describe_error_body(answer: Answer, key: str) -> tuple[str | None, str | None]:
    """Synthflow's description and request ID from an error answer of any shape seen, without
    the key: a `detail` object, string or validation list, an object with `error` or `message`,
    or no JSON at all (a proxy's HTML page)."""
    request_id = answer.headers.get("x-request-id")
    description = body = None
    try:
        body = json.loads(answer.body)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than Python recurses
        kind = answer.headers.get("content-type", "").split(";")[0] or "unknown"
        description = f"a non-JSON answer ({kind}, {len(answer.body)} bytes)"
    detail = body.get("detail") if isinstance(body, dict) else None
    if isinstance(detail, str):
        description = detail
    elif isinstance(detail, list):
        description = "; ".join(_problem(item) for item in detail if isinstance(item, dict))
    elif isinstance(body, dict):
        said = detail if isinstance(detail, dict) else body
        description = said.get("description") or said.get("message") or said.get("error")
        request_id = said.get("request_id") or request_id
    return (
        redact(str(description), key) if description else None,
        redact(str(request_id), key) if request_id else None,
    )


def error_for_status(
    workspace_id: str, answer: Answer, key: str, key_variable: str = DEFAULT_KEY_VARIABLE
) -> SynthflowError:
    """The typed error for an answer that retrying will not change."""
    error_type: type[SynthflowError] = RequestRejectedError
    fix = "This is not expected of GET /v2/numbers; check the base URL ends in /v2"
    if answer.status == 400:
        error_type = WorkspaceNotFoundError
        fix = (
            "Check the workspace ID in the config file or SYNTHFLOW_WORKSPACES, and that its "
            "region or base_url is the cluster the workspace lives on"
        )
    elif answer.status in (401, 403):
        error_type = AuthenticationError
        fix = (
            f"The API key was refused: set {key_variable} to a valid key from the workspace's "
            "Synthflow settings (API keys)"
        )
    description, request_id = describe_error_body(answer, key)
    return error_type(
        workspace_id,
        redact(f"Synthflow answered {answer.status} {answer.reason_phrase}".rstrip(), key),
        status=answer.status,
        description=description,
        request_id=request_id,
        fix=fix,
    )
