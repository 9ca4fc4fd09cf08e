"""The Synthflow HTTP client: one validated page per call, with retries, timeouts and a budget.

Decisions live here once: what is retried (429, 5xx, timeouts, dropped connections, malformed
or undecodable pages), how long to wait (exponential backoff with jitter, `Retry-After`
honoured, every wait capped), how many requests may be in flight, and what one answer may
cost: `fetch.timeout_s` for the whole request, body included, and `fetch.max_response_mb` of
body after decompression. The key travels only in the Authorization header; it is never
logged, put in a URL or in an error, and anything the server says is stripped of it.
"""

from __future__ import annotations

import asyncio
import email.utils
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pyarrow as pa
from pydantic import SecretStr, ValidationError

from pipelines.config import FetchSettings
from pipelines.synthflow.budget import BudgetRegistry, RequestBudget
from pipelines.synthflow.errors import (
    Answer,
    MalformedResponseError,
    UnavailableError,
    describe_error_body,
    error_for_status,
)
from pipelines.synthflow.models import NUMBERS_PAGE, NumberRecord

BACKOFF_BASE_S = 0.25
Record = tuple[str, str | None, bool]  # number, sid, is_available
RECORD_SCHEMA = pa.schema(
    [("number", pa.string()), ("sid", pa.string()), ("is_available", pa.bool_())]
)


@dataclass(frozen=True)
class Endpoint:
    """Where one workspace's listing is read, and with which key."""

    workspace_id: str
    base_url: str
    api_key: SecretStr

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc

    def page_url(self, offset: int, limit: int) -> httpx.URL:
        params = {"workspace": self.workspace_id, "limit": limit, "offset": offset}
        return httpx.URL(f"{self.base_url}/numbers", params=params)

    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"}


def as_records(numbers: pa.RecordBatch | pa.Table) -> list[Record]:
    """RECORD_SCHEMA's columns as (number, sid, is_available) tuples, for reading and comparing."""
    return list(zip(*(numbers[name].to_pylist() for name in RECORD_SCHEMA.names), strict=True))


def _columns(records: list[NumberRecord]) -> pa.RecordBatch:
    """A page's records as Arrow columns: a few buffers instead of a dict a number."""
    return pa.RecordBatch.from_arrays(
        [
            pa.array([record["number"] for record in records], pa.string()),
            pa.array([record.get("sid") for record in records], pa.string()),
            pa.array([record["is_available"] for record in records], pa.bool_()),
        ],
        schema=RECORD_SCHEMA,
    )


@dataclass(frozen=True)
class Page:
    offset: int
    total_records: int
    numbers: pa.RecordBatch  # RECORD_SCHEMA, one row per record in the order served


@dataclass
class RequestCounts:
    """What reading one workspace cost, for metadata and the summary."""

    requests: int = 0
    retries: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def failed(self, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number of seconds or an HTTP date; None when unusable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class _TooLarge(Exception):
    """An answer's body outgrew `fetch.max_response_mb`."""


class SynthflowClient:
    """Reads pages of `GET /v2/numbers`; share one instance across every workspace of a run."""

    def __init__(
        self,
        fetch: FetchSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.fetch = fetch
        self._transport = transport
        self._sleep = sleep
        self._budgets = BudgetRegistry(fetch.requests_per_second, fetch.max_requests_per_second)
        self._in_flight = asyncio.Semaphore(fetch.concurrency)
        self._max_body = int(fetch.max_response_mb * 1024 * 1024)
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> SynthflowClient:
        self._http = httpx.AsyncClient(
            transport=self._transport,
            limits=httpx.Limits(max_connections=self.fetch.concurrency),
            timeout=httpx.Timeout(self.fetch.timeout_s),
            headers={"Accept": "application/json", "User-Agent": "synthflow-numbers"},
            follow_redirects=False,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        http, self._http = self._http, None
        if http is not None:
            await http.aclose()

    def budget(self, endpoint: Endpoint) -> RequestBudget:
        return self._budgets.for_endpoint(endpoint.host, endpoint.api_key.get_secret_value())

    def backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, or the server's `Retry-After`; both capped."""
        if retry_after is not None:
            return min(retry_after, self.fetch.max_backoff_s)
        ceiling = min(self.fetch.max_backoff_s, BACKOFF_BASE_S * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    async def _get(self, endpoint: Endpoint, offset: int, limit: int) -> Answer:
        """One request and its whole body, decompressed, within the deadline and the cap."""
        assert self._http is not None, "use SynthflowClient as an async context manager"
        async with (
            asyncio.timeout(self.fetch.timeout_s),
            self._http.stream(
                "GET", endpoint.page_url(offset, limit), headers=endpoint.headers()
            ) as response,
        ):
            declared = response.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > self._max_body:
                raise _TooLarge
            body = bytearray()
            async for chunk in response.aiter_bytes():
                body += chunk
                if len(body) > self._max_body:
                    raise _TooLarge
            return Answer(response.status_code, response.reason_phrase, response.headers, body)

    async def fetch_page(
        self, endpoint: Endpoint, offset: int, limit: int, counts: RequestCounts
    ) -> Page:
        """One page, retried until it arrives whole and well-formed or the retries run out."""
        key = endpoint.api_key.get_secret_value()
        attempt = 0
        while True:
            retry_after = None
            answer = None
            async with self._in_flight:
                # Paced once a place in flight is held, so a request leaves when its budget
                # slot comes, not later in a burst with others that waited for a place.
                budget = self.budget(endpoint)
                await budget.acquire()
                counts.requests += 1
                try:
                    answer = await self._get(endpoint, offset, limit)
                except TimeoutError:
                    reason = f"timed out (no whole answer within {self.fetch.timeout_s:g} s)"
                except httpx.DecodingError:
                    reason = "malformed page (its body could not be decompressed)"
                except _TooLarge:
                    reason = (
                        f"malformed page (larger than fetch.max_response_mb, "
                        f"{self.fetch.max_response_mb:g} MB)"
                    )
                except httpx.TransportError as error:
                    reason = _transport_failure(error)
            if answer is not None:
                if answer.status == 200:
                    try:
                        body = NUMBERS_PAGE.validate_json(answer.body)["response"]
                    except ValidationError as error:
                        reason = f"malformed page ({_first_problem(error)})"
                    else:
                        budget.succeeded()
                        return Page(
                            offset=offset,
                            total_records=body["pagination"]["total_records"],
                            numbers=_columns(body["phone_numbers"]),
                        )
                elif answer.status == 429 or answer.status >= 500:
                    if answer.status == 429:
                        budget.slow_down()
                    retry_after = retry_after_seconds(answer.headers.get("retry-after"))
                    description, request_id = describe_error_body(answer, key)
                    reason = f"HTTP {answer.status}" + (f": {description}" if description else "")
                    if request_id:
                        reason += f" (request ID {request_id})"
                else:
                    raise error_for_status(endpoint.workspace_id, answer, key)
            counts.failed(reason.split(" (")[0].split(":")[0])
            if attempt == self.fetch.max_retries:
                error_type = (
                    MalformedResponseError if reason.startswith("malformed") else UnavailableError
                )
                raise error_type(
                    endpoint.workspace_id,
                    f"the page at offset {offset} failed {attempt + 1} times, last: {reason}",
                    fix="Synthflow or the network kept failing; the next run tries again "
                    "(raise fetch.max_retries or fetch.timeout_s if this persists)",
                )
            counts.retries += 1
            await self._sleep(self.backoff_s(attempt, retry_after))
            attempt += 1


def _transport_failure(error: httpx.TransportError) -> str:
    """Why a request got no answer."""
    if isinstance(error, httpx.TimeoutException):
        return "timed out"
    return f"connection failed ({type(error).__name__})"


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"]) or "body"
    return f"{where}: {problem['msg']}"
