"""The Synthflow HTTP client: one validated page per call, with retries, timeouts and a budget.

Decisions live here once: what is retried (429, 5xx, timeouts, dropped connections, malformed
pages), how long to wait (exponential backoff with jitter, `Retry-After` honoured, every wait
capped), and how many requests may be in flight. The key travels only in the Authorization
header; it is never logged, put in a URL or in an error.
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
from pydantic import SecretStr, ValidationError

from pipelines.config import FetchSettings
from pipelines.synthflow.budget import BudgetRegistry, RequestBudget
from pipelines.synthflow.errors import (
    MalformedResponseError,
    UnavailableError,
    describe_error_body,
    error_for_status,
)
from pipelines.synthflow.models import NumbersPage

BACKOFF_BASE_S = 0.25
Record = tuple[str, str | None, bool]  # number, sid, is_available


@dataclass(frozen=True)
class Endpoint:
    """Where one workspace's listing is read, and with which key."""

    workspace_id: str
    base_url: str
    api_key: SecretStr

    @property
    def host(self) -> str:
        return urlsplit(self.base_url).netloc


@dataclass(frozen=True)
class Page:
    offset: int
    total_records: int
    records: list[Record]


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
        self._budgets = BudgetRegistry(fetch.requests_per_second)
        self._in_flight = asyncio.Semaphore(fetch.concurrency)
        self._http: httpx.AsyncClient | None = None

    async def __aenter__(self) -> SynthflowClient:
        self._http = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(self.fetch.timeout_s),
            limits=httpx.Limits(
                max_connections=self.fetch.concurrency,
                max_keepalive_connections=self.fetch.concurrency,
            ),
            headers={"Accept": "application/json", "User-Agent": "synthflow-numbers"},
            follow_redirects=False,
            verify=True,
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    def budget(self, endpoint: Endpoint) -> RequestBudget:
        return self._budgets.for_endpoint(endpoint.host, endpoint.api_key.get_secret_value())

    def backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Full-jitter exponential backoff, or the server's `Retry-After`; both capped."""
        if retry_after is not None:
            return min(retry_after, self.fetch.max_backoff_s)
        ceiling = min(self.fetch.max_backoff_s, BACKOFF_BASE_S * 2**attempt)
        return random.uniform(ceiling / 2, ceiling)

    async def fetch_page(
        self, endpoint: Endpoint, offset: int, limit: int, counts: RequestCounts
    ) -> Page:
        """One page, retried until it arrives whole and well-formed or the retries run out."""
        assert self._http is not None, "use SynthflowClient as an async context manager"
        budget = self.budget(endpoint)
        headers = {"Authorization": f"Bearer {endpoint.api_key.get_secret_value()}"}
        params = {"workspace": endpoint.workspace_id, "limit": limit, "offset": offset}
        url = f"{endpoint.base_url}/numbers"
        attempt = 0
        while True:
            await budget.acquire()
            retry_after = None
            counts.requests += 1
            async with self._in_flight:
                try:
                    response = await self._http.get(url, params=params, headers=headers)
                    await response.aread()
                except httpx.TimeoutException:
                    reason, response = "timed out", None
                except httpx.TransportError as error:
                    reason, response = f"connection failed ({type(error).__name__})", None
            if response is not None:
                status = response.status_code
                if status == 200:
                    try:
                        page = NumbersPage.model_validate_json(response.content)
                    except ValidationError as error:
                        reason = f"malformed page ({_first_problem(error)})"
                    else:
                        budget.succeeded()
                        return Page(
                            offset=offset,
                            total_records=page.response.pagination.total_records,
                            records=[
                                (r.number, r.sid, r.is_available)
                                for r in page.response.phone_numbers
                            ],
                        )
                elif status == 429 or status >= 500:
                    if status == 429:
                        budget.slow_down()
                    retry_after = retry_after_seconds(response.headers.get("retry-after"))
                    description, request_id = describe_error_body(response)
                    reason = f"HTTP {status}" + (f": {description}" if description else "")
                    if request_id:
                        reason += f" (request ID {request_id})"
                else:
                    raise error_for_status(endpoint.workspace_id, response)
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


def _first_problem(error: ValidationError) -> str:
    problem = error.errors()[0]
    where = ".".join(str(part) for part in problem["loc"]) or "body"
    return f"{where}: {problem['msg']}"
