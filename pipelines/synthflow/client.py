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
import ssl
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


def as_records(numbers: pa.RecordBatch | pa.Table) -> list[Record]:
    """RECORD_SCHEMA's columns as (number, sid, is_available) tuples, for reading and comparing."""
    return list(zip(*(numbers[name].to_pylist() for name in RECORD_SCHEMA.names), strict=True))


def _columns(records: list[NumberRecord]) -> pa.RecordBatch:
    """A page's records as Arrow columns: a few buffers instead of a dict a number."""
    return pa.RecordBatch.from_arrays(
        [
            pa.array([record["number"] for record in records], pa.string()),
            pa.array([record["sid"] for record in records], pa.string()),
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
        # One httpx client per request in flight, each with one connection, handed out in
        # turn: httpcore re-checks every idle connection of a pool (a system call each)
        # whenever it hands one out, which with many connections costs more CPU than the
        # request itself. Taking a client from `_idle` is what limits requests in flight.
        self._idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        self._clients: set[httpx.AsyncClient] = set()
        self._closing: set[asyncio.Task[None]] = set()
        self._tls: ssl.SSLContext | None = None

    def _open_client(self) -> httpx.AsyncClient:
        if self._transport is not None and self._clients:
            return next(iter(self._clients))  # a given transport pools for itself: share it
        client = httpx.AsyncClient(
            transport=self._transport,
            timeout=httpx.Timeout(self.fetch.timeout_s),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            headers={"Accept": "application/json", "User-Agent": "synthflow-numbers"},
            follow_redirects=False,
            verify=self._tls,
        )
        self._clients.add(client)
        return client

    def _replace_client(self, client: httpx.AsyncClient) -> httpx.AsyncClient:
        """A fresh client for one whose request failed or was cancelled: its connection is
        in doubt (a pool of one can be left waiting for good after a cancelled request)."""
        if self._transport is not None:
            return client  # the given transport's connections are its own to manage
        self._clients.discard(client)
        closing = asyncio.ensure_future(client.aclose())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        return self._open_client()

    async def __aenter__(self) -> SynthflowClient:
        self._tls = httpx.create_ssl_context(verify=True)  # built once (~40 ms), shared
        for _ in range(self.fetch.concurrency):
            self._idle.put_nowait(self._open_client())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        clients, self._clients, self._idle = self._clients, set(), asyncio.Queue()
        for client in clients:
            await client.aclose()
        await asyncio.gather(*self._closing, return_exceptions=True)

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
        assert self._tls is not None, "use SynthflowClient as an async context manager"
        budget = self.budget(endpoint)
        headers = {"Authorization": f"Bearer {endpoint.api_key.get_secret_value()}"}
        params = {"workspace": endpoint.workspace_id, "limit": limit, "offset": offset}
        url = httpx.URL(f"{endpoint.base_url}/numbers", params=params)  # built once, not per try
        attempt = 0
        while True:
            retry_after = None
            http = await self._idle.get()
            answered = False
            try:
                # Paced once a client is held, so a request leaves when its budget slot
                # comes, not later in a burst with others that waited for a client.
                await budget.acquire()
                counts.requests += 1
                response = await http.get(url, headers=headers)
                await response.aread()
                answered = True
            except httpx.TimeoutException:
                reason, response = "timed out", None
            except httpx.TransportError as error:
                reason, response = f"connection failed ({type(error).__name__})", None
            finally:
                self._idle.put_nowait(http if answered else self._replace_client(http))
            # Let a request that was waiting for a client go out before this page is parsed:
            # with many answers arriving together, each would otherwise leave only after the
            # pages before it were parsed, adding their parsing to every request's latency.
            await asyncio.sleep(0)
            if response is not None:
                status = response.status_code
                if status == 200:
                    try:
                        body = NUMBERS_PAGE.validate_json(response.content)["response"]
                    except ValidationError as error:
                        reason = f"malformed page ({_first_problem(error)})"
                    else:
                        budget.succeeded()
                        return Page(
                            offset=offset,
                            total_records=body["pagination"]["total_records"],
                            numbers=_columns(body["phone_numbers"]),
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
