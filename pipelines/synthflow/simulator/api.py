"""What the listing endpoint says: its route, keys, query validation, and its bodies.

Decides, for one request, whether it reaches a page (and which one) or ends in a 400, 401,
404, 405 or 422, and what the success envelope and Synthflow's error body look like. Every
body is written by the `json` library. Knows nothing of sockets, faults or seeded data.
"""

from __future__ import annotations

import hmac
import json
import re
from collections.abc import Container, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

from pipelines.synthflow.simulator.numbers import PhoneNumber

_LISTING_PATH = "/v2/numbers"
_TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})
_INTEGER = re.compile(r"[+-]?[0-9]+")


@dataclass(frozen=True)
class Answer:
    """One HTTP answer, decided under the simulator's lock and written outside it."""

    status: int
    body: bytes
    request_id: str
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    # "whole", "drop" (no answer at all), "truncate" (half the body) or "trickle" (the body
    # a byte at a time, `trickle_s` before each byte)
    mode: str = "whole"
    trickle_s: float = 0.0


@dataclass(frozen=True)
class PageRequest:
    """A request that passed every check: the page it asks for."""

    workspace_id: str
    limit: int
    offset: int
    is_available: bool | None


@dataclass(frozen=True)
class Page:
    """A page taken from a listing; encoding it is left until the lock is released."""

    request_id: str
    total: int
    limit: int
    offset: int
    records: list[PhoneNumber]


def to_json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def envelope(page: Page) -> dict[str, Any]:
    """The success body as objects; faults bend a fresh one before it is encoded."""
    pagination = {"total_records": page.total, "limit": page.limit, "offset": page.offset}
    records = [
        {"number": p.number, "sid": p.sid, "is_available": p.is_available} for p in page.records
    ]
    return {"status": "ok", "response": {"pagination": pagination, "phone_numbers": records}}


def page_answer(page: Page) -> Answer:
    return Answer(200, to_json(envelope(page)), page.request_id)


def error(
    status: int,
    description: str,
    request_id: str,
    category: str,
    *,
    headers: tuple[tuple[str, str], ...] = (),
) -> Answer:
    """Synthflow's documented error shape."""
    detail = {
        "status": status,
        "description": description,
        "request_id": request_id,
        "category": category,
    }
    return Answer(status, to_json({"detail": detail}), request_id, headers=headers)


def rate_limited(request_id: str, retry_after_s: int) -> Answer:
    """The server-side budget's 429, which, unlike the "429" fault, always says when to retry."""
    headers = (("Retry-After", str(retry_after_s)),)
    return error(429, "Too many requests; retry later", request_id, "rate_limited", headers=headers)


def method_not_allowed(path: str, request_id: str) -> Answer:
    if urlsplit(path).path == _LISTING_PATH:
        return Answer(405, to_json({"detail": "Method Not Allowed"}), request_id)
    return _not_found(request_id)


def _not_found(request_id: str) -> Answer:
    return Answer(404, to_json({"detail": "Not Found"}), request_id)


def route(
    path: str,
    authorization: str | None,
    request_id: str,
    *,
    workspaces: Container[str],
    api_keys: Mapping[str, str] | None,
    page_size_cap: int | None,
) -> Answer | PageRequest:
    """Check one GET in the documented order: path, key present, query, workspace and key.

    `api_keys` None accepts any key for any workspace; otherwise a workspace accepts only its
    own key, and a key that opens no workspace at all is told 401 rather than 400.
    """
    url = urlsplit(path)
    if url.path != _LISTING_PATH:
        return _not_found(request_id)
    token = _bearer_token(authorization)
    if token is None:
        description = (
            "Missing API key: send it as 'Authorization: Bearer <key>'"
            if not (authorization or "").strip()
            else "Malformed Authorization header: expected 'Bearer <key>'"
        )
        return error(401, description, request_id, "unauthorized")
    request, problems = _parse_query(parse_qs(url.query, keep_blank_values=True))
    if problems:
        return Answer(422, to_json({"detail": problems}), request_id)
    workspace_id = request.workspace_id
    exists = workspace_id in workspaces
    if not exists and _opens_any(token, api_keys):
        return error(400, f"Workspace {workspace_id} not found", request_id, "bad_request")
    if not exists or not _opens(workspace_id, token, api_keys):
        description = f"Invalid API key for workspace {workspace_id}"
        return error(401, description, request_id, "unauthorized")
    if page_size_cap is not None and request.limit > page_size_cap:
        return PageRequest(workspace_id, page_size_cap, request.offset, request.is_available)
    return request


def _opens_any(token: str, api_keys: Mapping[str, str] | None) -> bool:
    return api_keys is None or any(_same_secret(token, key) for key in api_keys.values())


def _opens(workspace_id: str, token: str, api_keys: Mapping[str, str] | None) -> bool:
    if api_keys is None:
        return True
    expected = api_keys.get(workspace_id)
    return expected is not None and _same_secret(token, expected)


def _same_secret(given: str, expected: str) -> bool:
    # Bytes, because compare_digest refuses non-ASCII str and header values can be anything.
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def _parse_query(query: dict[str, list[str]]) -> tuple[PageRequest, list[dict[str, Any]]]:
    """The listing's query parameters, or FastAPI-style validation problems (last value wins)."""
    problems: list[dict[str, Any]] = []
    workspace_values = query.get("workspace")
    if not workspace_values:
        problems.append(_problem("missing", "workspace", "Field required", None))
    limit = _integer(query, "limit", 20, 1, problems)
    offset = _integer(query, "offset", 0, 0, problems)
    is_available: bool | None = None
    if "is_available" in query:
        raw = query["is_available"][-1]
        if raw.strip().lower() in _TRUE_WORDS:
            is_available = True
        elif raw.strip().lower() in _FALSE_WORDS:
            is_available = False
        else:
            message = "Input should be a valid boolean, unable to interpret input"
            problems.append(_problem("bool_parsing", "is_available", message, raw))
    workspace_id = workspace_values[-1] if workspace_values else ""
    return PageRequest(workspace_id, limit, offset, is_available), problems


def _integer(
    query: dict[str, list[str]], name: str, default: int, minimum: int, problems: list[Any]
) -> int:
    if name not in query:
        return default
    raw = query[name][-1]
    if not _INTEGER.fullmatch(raw.strip()):
        message = "Input should be a valid integer, unable to parse string as an integer"
        problems.append(_problem("int_parsing", name, message, raw))
        return default
    value = int(raw)
    if value < minimum:
        message = f"Input should be greater than or equal to {minimum}"
        problem = _problem("greater_than_equal", name, message, raw)
        problems.append({**problem, "ctx": {"ge": minimum}})
        return default
    return value


def _problem(kind: str, name: str, message: str, raw: str | None) -> dict[str, Any]:
    """One entry of a FastAPI validation list, as a 422 body carries it."""
    return {"type": kind, "loc": ["query", name], "msg": message, "input": raw}
