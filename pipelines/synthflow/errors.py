"""Typed errors of the Synthflow client, with messages written for the person on call.

Every message names the workspace, says what Synthflow answered (its description and
request ID when it gave them) and what to do. None ever holds the API key.
"""

from __future__ import annotations

import json

import httpx


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


def describe_error_body(response: httpx.Response) -> tuple[str | None, str | None]:
    """Synthflow's description and request ID from an error answer of any known shape.

    Shapes seen: {"detail": {"status", "description", "request_id", "category"}},
    {"detail": "Not Found"}, FastAPI validation lists under "detail",
    {"error": ..., "message": ...}, and non-JSON bodies (an HTML page from a proxy).
    """
    request_id = response.headers.get("x-request-id")
    try:
        body = json.loads(response.content)
    except ValueError:
        kind = response.headers.get("content-type", "").split(";")[0] or "unknown"
        return f"a non-JSON answer ({kind}, {len(response.content)} bytes)", request_id
    if not isinstance(body, dict):
        return None, request_id
    detail = body.get("detail")
    if isinstance(detail, dict):
        description = detail.get("description") or detail.get("message")
        request_id = detail.get("request_id") or request_id
        return (str(description) if description else None), request_id
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
    return (str(message) if message else None), body.get("request_id") or request_id


def error_for_status(workspace_id: str, response: httpx.Response) -> SynthflowError:
    """The typed error for an answer that retrying will not change."""
    description, request_id = describe_error_body(response)
    status = response.status_code
    common = {"status": status, "description": description, "request_id": request_id}
    reason = f"Synthflow answered {status} {response.reason_phrase}".rstrip()
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
