"""The Synthflow HTTP client: one validated page per call, with retries and a request budget.

Each answer is bounded in time (`fetch.timeout_s`, body included) and size (`fetch.max_response_mb`
after decompression); the key goes only in the Authorization header."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import heapq
import itertools
import random
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import httpx
import pyarrow as pa
from pydantic import SecretStr, ValidationError

from pipelines.config import FetchSettings
from pipelines.config.values import DEFAULT_KEY_VARIABLE
from pipelines.synthflow import errors
from pipelines.synthflow.budget import BudgetRegistry, RequestBudget
from pipelines.synthflow.models import NUMBERS_PAGE

BACKOFF_BASE_S = 0.25
Record = tuple[str, str | None, bool]  # number, sid, is_available
RECORD_SCHEMA = pa.schema({"number": pa.string(), "sid": pa.string(), "is_available": pa.bool_()})
RECORD = pa.struct(RECORD_SCHEMA)  # a page's records: one Arrow array, 4x sooner than from_pylist


@dataclass(frozen=True)
class Endpoint:
    """Where one workspace's listing is read, and with which key."""

    workspace_id: str
    base_url: str
    api_key: SecretStr
    key_variable: str = DEFAULT_KEY_VARIABLE  # where the key came from, named when it is refused

    def page_url(self, offset: int, limit: int) -> httpx.URL:
        params = {"workspace": self.workspace_id, "limit": limit, "offset": offset}
        return httpx.URL(f"{self.base_url}/numbers", params=params)


def as_records(numbers: pa.RecordBatch | pa.Table) -> list[Record]:
    """RECORD_SCHEMA's columns as (number, sid, is_available) tuples, for reading and comparing."""
    return list(zip(*(numbers[name].to_pylist() for name in RECORD_SCHEMA.names), strict=True))


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
    failures: Counter[str] = field(default_factory=Counter)  # by kind: "HTTP 503", "timed out"


def retry_after_seconds(value: str | None) -> float | None:
    """`Retry-After` as seconds: a number of seconds or an HTTP date; None when unusable."""
    try:
        return max(0.0, float(value or ""))
    except ValueError:
        pass
    try:
        return max(0.0, email.utils.parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class _Failure(Exception):
    """An attempt that a retry may mend: `kind` is what is counted, the message says why."""

    def __init__(self, kind: str, detail: str = "", retry_after: float | None = None) -> None:
        super().__init__(kind + detail)
        self.kind = kind
        self.retry_after = retry_after


class _Places:
    """At most `limit` requests in flight, each on a client of its own, opened when first
    needed. A place that frees goes to the waiting request of the lowest rank (the listing that
    began first): listings then end one after another, each stored while the next is read,
    rather than all together when the reading ends."""

    def __init__(self, limit: int, open_client: Callable[[], httpx.AsyncClient]) -> None:
        self.clients: list[httpx.AsyncClient] = []  # every client opened, to close
        self._limit = limit
        self._open_client = open_client
        self._free: list[httpx.AsyncClient] = []
        self._waiting: list[tuple[float, int, asyncio.Future[httpx.AsyncClient]]] = []
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def held(self, rank: float) -> AsyncIterator[httpx.AsyncClient]:
        if self._free and not self._waiting:
            client = self._free.pop()
        elif len(self.clients) < self._limit:
            client = self._opened()
        else:
            given = asyncio.get_running_loop().create_future()
            heapq.heappush(self._waiting, (rank, next(self._arrivals), given))
            try:
                client = await given
            except asyncio.CancelledError:
                if given.done() and not given.cancelled():  # given a place as it was cancelled
                    self._release(given.result())
                raise
        try:
            yield client
        except BaseException:
            # httpcore can keep the connection of a request cancelled at the wrong moment as
            # busy for good (encode/httpcore#1093): the place goes on with a new client.
            self.clients.remove(client)
            self._release(self._opened())
            await client.aclose()
            raise
        self._release(client)

    def _opened(self) -> httpx.AsyncClient:
        client = self._open_client()
        self.clients.append(client)
        return client

    def _release(self, client: httpx.AsyncClient) -> None:
        while self._waiting:
            given = heapq.heappop(self._waiting)[2]
            if not given.done():  # not cancelled while it waited
                given.set_result(client)
                return
        self._free.append(client)


class SynthflowClient:
    """Reads pages of `GET /v2/numbers`; share one instance across every workspace of a run."""

    def __init__(
        self,
        fetch: FetchSettings,
        *,
        new_transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.fetch = fetch
        self._sleep = sleep
        self._budgets = BudgetRegistry(fetch.requests_per_second, fetch.max_requests_per_second)
        # A client of one connection a place: httpcore's pool looks at every connection it
        # holds on each request; one pool of 16 cost 1-2.4 ms more CPU a request.
        tls = httpx.create_ssl_context()
        self._in_flight = _Places(
            fetch.concurrency,
            lambda: httpx.AsyncClient(
                transport=new_transport() if new_transport else None,  # each client its own
                verify=tls,
                limits=httpx.Limits(max_connections=1),
                timeout=httpx.Timeout(fetch.timeout_s),
                headers={"Accept": "application/json", "User-Agent": "synthflow-numbers"},
            ),
        )

    async def __aenter__(self) -> SynthflowClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        for client in self._in_flight.clients:
            await client.aclose()

    def budget(self, endpoint: Endpoint) -> RequestBudget:
        host = urlsplit(endpoint.base_url).netloc
        return self._budgets.for_endpoint(host, endpoint.api_key.get_secret_value())

    async def fetch_page(
        self, endpoint: Endpoint, offset: int, limit: int, counts: RequestCounts, rank: float = 0.0
    ) -> Page:
        """One page, retried until it arrives whole and well-formed or the retries run out.
        Requests of a lower `rank` leave first when more wait than may be in flight."""
        for attempt in itertools.count():
            try:
                return await self._attempt(endpoint, offset, limit, counts, rank)
            except _Failure as failure:
                counts.failures[failure.kind] += 1
                if attempt == self.fetch.max_retries:
                    malformed = failure.kind == "malformed page"
                    error = errors.MalformedResponseError if malformed else errors.UnavailableError
                    raise error(
                        endpoint.workspace_id,
                        f"the page at offset {offset} failed {attempt + 1} times, last: {failure}",
                        fix="Synthflow or the network kept failing; the next run tries again "
                        "(raise fetch.max_retries or fetch.timeout_s if this persists)",
                    ) from None
                retry_after = failure.retry_after
            # The server's Retry-After, else full-jitter exponential backoff; both capped.
            ceiling = min(self.fetch.max_backoff_s, BACKOFF_BASE_S * 2**attempt)
            wait = random.uniform(ceiling / 2, ceiling) if retry_after is None else retry_after
            counts.retries += 1
            await self._sleep(min(wait, self.fetch.max_backoff_s))

    async def _attempt(
        self, endpoint: Endpoint, offset: int, limit: int, counts: RequestCounts, rank: float
    ) -> Page:
        """One request: its page, a _Failure worth retrying, or an error that retrying won't fix."""
        key = endpoint.api_key.get_secret_value()
        budget = self.budget(endpoint)
        async with self._in_flight.held(rank) as http:
            # Paced once a place in flight is held, so a request leaves when its budget slot
            # comes, not later in a burst with others that waited for a place.
            await budget.acquire()
            counts.requests += 1
            answer = await self._get(http, endpoint.page_url(offset, limit), key)
        if answer.status == 200:
            try:
                body = NUMBERS_PAGE.validate_json(answer.body)["response"]
            except ValidationError as error:
                problem = error.errors()[0]
                where = ".".join(str(part) for part in problem["loc"]) or "body"
                raise _Failure("malformed page", f" ({where}: {problem['msg']})") from None
            budget.succeeded()
            numbers = pa.RecordBatch.from_struct_array(pa.array(body["phone_numbers"], RECORD))
            return Page(offset, body["pagination"]["total_records"], numbers)
        if answer.status != 429 and answer.status < 500:
            raise errors.error_for_status(endpoint.workspace_id, answer, key, endpoint.key_variable)
        if answer.status == 429:
            budget.slow_down()
        description, request_id = errors.describe_error_body(answer, key)
        detail = f": {description}" if description else ""
        detail += f" (request ID {request_id})" if request_id else ""
        retry_after = retry_after_seconds(answer.headers.get("retry-after"))
        raise _Failure(f"HTTP {answer.status}", detail, retry_after)

    async def _get(self, http: httpx.AsyncClient, url: httpx.URL, key: str) -> errors.Answer:
        """One answer, its body whole and decompressed, within the deadline and the size cap."""
        most_mb = self.fetch.max_response_mb
        try:
            async with (
                asyncio.timeout(self.fetch.timeout_s),
                http.stream("GET", url, headers={"Authorization": f"Bearer {key}"}) as answer,
            ):
                body = bytearray()
                async for chunk in answer.aiter_bytes():
                    body += chunk
                    if len(body) > most_mb * 2**20:
                        detail = f" (larger than fetch.max_response_mb, {most_mb:g} MB)"
                        raise _Failure("malformed page", detail)
        except (TimeoutError, httpx.TimeoutException):
            detail = f" (no whole answer within {self.fetch.timeout_s:g} s)"
            raise _Failure("timed out", detail) from None
        except httpx.DecodingError:
            raise _Failure("malformed page", " (its body could not be decompressed)") from None
        except httpx.TransportError as error:
            raise _Failure("connection failed", f" ({type(error).__name__})") from None
        return errors.Answer(answer.status_code, answer.reason_phrase, answer.headers, body)
