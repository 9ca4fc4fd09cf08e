"""Typed errors of the Synthflow client, with messages written for the person on call.

Every message names the workspace, says what Synthflow answered (its description and
request ID when it gave them) and what to do. None ever holds the API key: whatever the
server said is stripped of it first, since an error body may echo the request's headers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import httpx

REDACTED = "[redacted]"


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, its body whole and decompressed."""

    status: int
    reason_phrase: str
    headers: httpx.Headers
    body: bytes


def redact(text: str, key: str) -> str:
    """`text` with every occurrence of the key replaced."""
    return text.replace(key, REDACTED) if key else text


class SynthflowError(Exception):
    """A workspace's listing could not be read."""

    def __init__(
        self,
        workspace_id: str,
        message: str,
        *,
        status: int | None = None,
        description: str | None = None,
        request_id: str | None = None,
        fix: str | None = None,
    ) -> None:
        self.workspace_id = workspace_id
        self.status = status
        self.description = description
        self.request_id = request_id
        parts = [f"workspace {workspace_id}: {message}"]
        if description:
            parts.append(f"Synthflow says: {description}")
        if request_id:
            parts.append(f"request ID {request_id}")
        text = "; ".join(parts)
        super().__init__(f"{text}. {fix}" if fix else text)


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


def describe_error_body(answer: Answer, key: str) -> tuple[str | None, str | None]:
    """Synthflow's description and request ID from an error answer, stripped of `key`."""
    description, request_id = _described(answer)
    return (
        redact(description, key) if description else None,
        redact(request_id, key) if request_id else None,
    )


def _described(answer: Answer) -> tuple[str | None, str | None]:
    """The description and request ID of an error answer of any known shape.

    Shapes seen: {"detail": {"status", "description", "request_id", "category"}},
    {"detail": "Not Found"}, FastAPI validation lists under "detail",
    {"error": ..., "message": ...}, and non-JSON bodies (an HTML page from a proxy).
    """
    request_id = answer.headers.get("x-request-id")
    try:
        body = json.loads(answer.body)
    except ValueError:
        kind = answer.headers.get("content-type", "").split(";")[0] or "unknown"
        return f"a non-JSON answer ({kind}, {len(answer.body)} bytes)", request_id
    if not isinstance(body, dict):
        return None, request_id
    detail = body.get("detail")
    if isinstance(detail, dict):
        description = detail.get("description") or detail.get("message")
        request_id = detail.get("request_id") or request_id
        return (str(description) if description else None), _text(request_id)
    if isinstance(detail, str):
        return detail, request_id
    if isinstance(detail, list):
        problems = [
            f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}"
            for item in detail
            if isinstance(item, dict)
        ]
        return ("; ".join(problems) or None), request_id
    message = body.get("message") or body.get("error")
    return (str(message) if message else None), _text(body.get("request_id") or request_id)


def _text(value: object) -> str | None:
    return None if value is None else str(value)


def error_for_status(workspace_id: str, answer: Answer, key: str) -> SynthflowError:
    """The typed error for an answer that retrying will not change."""
    description, request_id = describe_error_body(answer, key)
    status = answer.status
    common = {"status": status, "description": description, "request_id": request_id}
    reason = redact(f"Synthflow answered {status} {answer.reason_phrase}".rstrip(), key)
    if status == 400:
        return WorkspaceNotFoundError(
            workspace_id,
            reason,
            fix="Check the workspace ID in the config file or SYNTHFLOW_WORKSPACES, and that "
            "its region or base_url is the cluster the workspace lives on",
            **common,
        )
    if status in (401, 403):
        return AuthenticationError(
            workspace_id,
            reason,
            fix="The API key was refused: set the workspace's key variable to a valid key from "
            "its Synthflow settings",
            **common,
        )
    return RequestRejectedError(
        workspace_id,
        reason,
        fix="This is not expected of GET /v2/numbers; check the base URL ends in /v2",
        **common,
    )
