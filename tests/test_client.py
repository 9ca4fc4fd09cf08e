"""The Synthflow client: one validated page per call, or a typed error that says why.

The contract (shared/design.md, "What must always hold"; shared/synthflow-api.md, "Errors"):
- a 200 page is validated (extra fields ignored) and returned as (number, sid, is_available);
- the key travels only as `Authorization: Bearer <key>` and appears in no error message;
- 400 is an unknown workspace, 401/403 a refused key, other 4xx a rejected request: none is
  retried, each names the workspace with Synthflow's description and request ID;
- 429, 5xx, timeouts, dropped connections and malformed pages are retried up to
  `fetch.max_retries` times, then end in UnavailableError or MalformedResponseError;
- waits are full-jitter exponential backoff or the server's Retry-After, always capped at
  `fetch.max_backoff_s`;
- a 429 slows the request budget of its host and key (the budget itself: test_budget.py).

Every test talks real HTTP to the simulator, except the unit tests of the pure functions.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pipelines.config import FetchSettings
from pipelines.synthflow.client import (
    Endpoint,
    Page,
    RequestCounts,
    SynthflowClient,
    _Places,
    as_records,
    retry_after_seconds,
)
from pipelines.synthflow.errors import (
    Answer,
    AuthenticationError,
    MalformedResponseError,
    RequestRejectedError,
    SynthflowError,
    UnavailableError,
    WorkspaceNotFoundError,
    describe_error_body,
    error_for_status,
)
from pipelines.synthflow.listing import Listing, read_listing
from pipelines.synthflow.simulator import Simulator, demo_simulator

KEY = "sk-test-7c1e5b2a9f"
UNKNOWN_WORKSPACE = "1700000000000x000000000000000000"
NUMBERS = 25


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


def settings(**overrides: Any) -> FetchSettings:
    """Fast settings: tiny backoff, no client-side pacing worth noticing."""
    values: dict[str, Any] = {
        "page_size": 10,
        "max_retries": 3,
        "max_backoff_s": 0.01,
        "timeout_s": 5.0,
        "requests_per_second": 1000.0,
    }
    return FetchSettings(**(values | overrides))


class RecordingSleep:
    """Stands in for asyncio.sleep: records each backoff instead of waiting."""

    def __init__(self) -> None:
        self.waits: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.waits.append(seconds)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with demo_simulator(seed=7, workspaces=1, numbers_per_workspace=NUMBERS) as simulator:
        yield simulator


def workspace_of(sim: Simulator) -> str:
    return sim.workspace_ids()[0]


def endpoint_for(
    sim: Simulator, workspace_id: str | None = None, *, key: str = KEY, base_url: str = ""
) -> Endpoint:
    return Endpoint(workspace_id or workspace_of(sim), base_url or sim.base_url, SecretStr(key))


def expected_records(sim: Simulator, offset: int = 0, limit: int = 10) -> list[tuple]:
    listing = sim.numbers(workspace_of(sim))[offset : offset + limit]
    return [(p.number, p.sid, p.is_available) for p in listing]


def fetch_page(
    fetch: FetchSettings,
    endpoint: Endpoint,
    *,
    offset: int = 0,
    limit: int = 10,
    counts: RequestCounts | None = None,
    sleep: RecordingSleep | None = None,
) -> Page:
    async def go() -> Page:
        client = SynthflowClient(fetch, sleep=sleep) if sleep else SynthflowClient(fetch)
        async with client:
            return await client.fetch_page(
                endpoint, offset, limit, counts if counts is not None else RequestCounts()
            )

    return run(go())


def failure(fetch: FetchSettings, endpoint: Endpoint, **kwargs: Any) -> SynthflowError:
    """The error that fetching the page must raise; it never holds the key."""
    with pytest.raises(SynthflowError) as caught:
        fetch_page(fetch, endpoint, **kwargs)
    assert KEY not in str(caught.value)
    assert KEY not in repr(caught.value.args)
    return caught.value


# --- pages ----------------------------------------------------------------------------------


def test_page_is_validated_and_returned(sim: Simulator) -> None:
    counts = RequestCounts()

    page = fetch_page(settings(), endpoint_for(sim), counts=counts)

    assert page.offset == 0
    assert page.total_records == NUMBERS
    assert as_records(page.numbers) == expected_records(sim)
    assert (counts.requests, counts.retries, counts.failures) == (1, 0, {})


def test_last_page_holds_the_remainder(sim: Simulator) -> None:
    page = fetch_page(settings(), endpoint_for(sim), offset=20, limit=10)

    assert as_records(page.numbers) == expected_records(sim, offset=20)
    assert len(as_records(page.numbers)) == NUMBERS - 20


@dataclass(frozen=True)
class RecordingEndpoint(Endpoint):
    """Notes each request as it is made (once it holds a place in flight) in `made`."""

    made: list[tuple[str, int]] = field(default_factory=list)

    def page_url(self, offset: int, limit: int) -> httpx.URL:
        self.made.append((self.workspace_id, offset))
        return super().page_url(offset, limit)


def test_a_request_is_made_only_once_it_holds_a_place_in_flight() -> None:
    """A listing queues all its pages at once. Requests made while queued would each be built
    on the event loop before the first answers could be read (a 50,000-number listing's first
    wave took twice its latency), so only those holding a place are made."""
    made: list[tuple[str, int]] = []
    concurrency, offsets = 2, range(0, NUMBERS, 2)

    async def go(endpoint: Endpoint) -> int:
        async with SynthflowClient(settings(concurrency=concurrency)) as client:
            pages = [
                asyncio.create_task(client.fetch_page(endpoint, offset, 2, RequestCounts()))
                for offset in offsets
            ]
            await asyncio.wait(pages, return_when=asyncio.FIRST_COMPLETED)
            made_by_first_answer = len(made)
            await asyncio.gather(*pages)
            return made_by_first_answer

    # Latency keeps every answer after the first wave's away until the first is read.
    with demo_simulator(
        seed=7, workspaces=1, numbers_per_workspace=NUMBERS, latency_s=0.05
    ) as slow:
        endpoint = RecordingEndpoint(workspace_of(slow), slow.base_url, SecretStr(KEY), made=made)
        made_by_first_answer = run(go(endpoint))

    # The first wave's answers each free a place before the first answer is read, no more.
    assert made_by_first_answer <= 2 * concurrency < len(offsets)
    assert sorted(offset for _, offset in made) == list(offsets)


def test_the_listing_begun_first_gets_the_places_in_flight_first() -> None:
    """Listings read together end one after another, not all at the end: a place that frees
    goes to the listing that began first, so each can be stored while the next is read."""
    concurrency, page_size = 2, 2
    made: list[tuple[str, int]] = []
    with demo_simulator(seed=7, workspaces=3, numbers_per_workspace=20, latency_s=0.02) as slow:
        endpoints = [
            RecordingEndpoint(workspace_id, slow.base_url, SecretStr(KEY), made=made)
            for workspace_id in slow.workspace_ids()
        ]

        async def go() -> list[Listing]:
            fetch = settings(concurrency=concurrency, page_size=page_size)
            async with SynthflowClient(fetch) as client:
                return await asyncio.gather(*(read_listing(client, e) for e in endpoints))

        listings = run(go())
    assert [listing.numbers.num_rows for listing in listings] == [20, 20, 20]
    first, last = endpoints[0].workspace_id, endpoints[-1].workspace_id
    first_done = max(i for i, (workspace_id, _) in enumerate(made) if workspace_id == first)
    last_meanwhile = [offset for workspace_id, offset in made[:first_done] if workspace_id == last]
    # Its first page, and at most a place or so that no earlier listing was waiting for; shared
    # first come, first served, it would have had a third of them (about 10).
    assert len(last_meanwhile) <= concurrency, made


def test_a_read_cancelled_while_it_waits_for_places_leaves_them_all_free() -> None:
    """Reads cancelled while they wait (Ctrl-C, a failed workspace) give back every place:
    a read after them still has all of them."""
    made: list[tuple[str, int]] = []
    with demo_simulator(seed=7, workspaces=3, numbers_per_workspace=20, latency_s=0.02) as slow:
        endpoints = [
            RecordingEndpoint(workspace_id, slow.base_url, SecretStr(KEY), made=made)
            for workspace_id in slow.workspace_ids()
        ]

        async def go() -> Listing:
            async with SynthflowClient(settings(concurrency=2, page_size=2)) as client:
                reads = [asyncio.create_task(read_listing(client, e)) for e in endpoints[:2]]
                while len(made) < 4:  # past both first pages: their readers wait for places
                    await asyncio.wait(reads, return_when=asyncio.FIRST_COMPLETED, timeout=0.01)
                for read in reads:
                    read.cancel()
                await asyncio.gather(*reads, return_exceptions=True)
                return await asyncio.wait_for(read_listing(client, endpoints[2]), timeout=10)

        assert run(go()).numbers.num_rows == 20


def test_a_place_handed_to_a_request_cancelled_before_it_runs_is_handed_on() -> None:
    """The race the test above rarely meets: a place is handed to a waiting request, which is
    cancelled before it resumes. The place (and its connection) must go on, not be lost."""

    async def go() -> list[httpx.AsyncClient]:
        places = _Places(1, lambda: httpx.AsyncClient())
        holding = places.held(rank=0)
        first = await holding.__aenter__()
        waiting = asyncio.create_task(places.held(rank=1).__aenter__())
        await asyncio.sleep(0)  # it queues for the only place
        await holding.__aexit__(None, None, None)  # hands the place to the waiting request
        waiting.cancel()  # which is cancelled before it resumes
        with pytest.raises(asyncio.CancelledError):
            await waiting
        async with asyncio.timeout(5), places.held(rank=2) as next_one:  # lost: waits forever
            assert next_one is first
        for client in places.clients:
            await client.aclose()
        return places.clients

    assert len(run(go())) == 1


@pytest.mark.parametrize("ending", [asyncio.CancelledError, httpx.ConnectTimeout])
def test_a_request_that_ends_abruptly_leaves_its_place_a_new_client(ending: type) -> None:
    """httpcore can keep a connection of a request cancelled while it connects as busy for good
    (encode/httpcore#1093); a place with a client of one connection would then wait forever.
    The place goes on with a new client and the old one is closed."""

    async def go() -> None:
        places = _Places(1, lambda: httpx.AsyncClient())
        with pytest.raises(ending):
            async with places.held(rank=0) as first:
                raise ending("ended abruptly")
        assert first.is_closed
        async with asyncio.timeout(5), places.held(rank=1) as second:
            assert second is not first and not second.is_closed
            assert places.clients == [second]
        await second.aclose()

    run(go())


def test_page_with_unknown_extra_fields_is_accepted(sim: Simulator) -> None:
    sim.fail_next("extra_fields")
    counts = RequestCounts()

    page = fetch_page(settings(), endpoint_for(sim), counts=counts)

    assert as_records(page.numbers) == expected_records(sim)
    assert counts.retries == 0


# --- the key --------------------------------------------------------------------------------


def test_key_is_sent_as_bearer_token() -> None:
    keyed = Simulator(seed=1, api_keys={"w1": KEY})
    keyed.add_workspace("w1", 5)
    with keyed:
        page = fetch_page(settings(), Endpoint("w1", keyed.base_url, SecretStr(KEY)))

    assert len(as_records(page.numbers)) == 5


def test_refused_key_is_authentication_error_not_retried() -> None:
    keyed = Simulator(seed=1, api_keys={"w1": "sk-the-right-one"})
    keyed.add_workspace("w1", 5)
    with keyed:
        error = failure(settings(), Endpoint("w1", keyed.base_url, SecretStr(KEY)))
        requests = keyed.stats.requests

    assert isinstance(error, AuthenticationError)
    assert error.status == 401
    assert "w1" in str(error)
    assert requests == 1


# --- answers that retrying cannot fix ---------------------------------------------------------


def test_unknown_workspace_is_named_with_synthflows_description_and_request_id(
    sim: Simulator,
) -> None:
    error = failure(settings(), endpoint_for(sim, UNKNOWN_WORKSPACE))

    assert isinstance(error, WorkspaceNotFoundError)
    assert error.status == 400
    assert error.description == f"Workspace {UNKNOWN_WORKSPACE} not found"
    assert error.request_id
    assert str(error).startswith(f"workspace {UNKNOWN_WORKSPACE}:")
    assert error.description in str(error)
    assert error.request_id in str(error)
    assert sim.stats.requests == 1


def test_wrong_path_is_rejected_as_404_without_retry(sim: Simulator) -> None:
    v1 = sim.base_url.removesuffix("/v2") + "/v1"

    error = failure(settings(), endpoint_for(sim, base_url=v1))

    assert isinstance(error, RequestRejectedError)
    assert error.status == 404
    assert error.description == "Not Found"
    assert sim.stats.requests == 1


def test_invalid_query_is_rejected_as_422_with_the_validation_problem(sim: Simulator) -> None:
    error = failure(settings(), endpoint_for(sim), limit=0)

    assert isinstance(error, RequestRejectedError)
    assert error.status == 422
    assert "query.limit" in (error.description or "")
    assert sim.stats.requests == 1


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (400, WorkspaceNotFoundError),
        (401, AuthenticationError),
        (403, AuthenticationError),
        (404, RequestRejectedError),
        (409, RequestRejectedError),
        (422, RequestRejectedError),
    ],
)
def test_client_errors_map_to_typed_errors(status: int, error_type: type) -> None:
    error = error_for_status("w1", response(status, json={"detail": "nope"}), KEY)

    assert type(error) is error_type
    assert error.status == status
    assert str(error).startswith("workspace w1:")


# --- answers that a retry fixes ---------------------------------------------------------------

PASSING_FAULTS = [
    "500",
    "502",
    "503",
    "429",
    "drop",
    "truncate",
    "not_json",
    "html",
    "missing_field",
    "wrong_type",
]


@pytest.mark.parametrize("kind", PASSING_FAULTS)
def test_passing_fault_is_retried_then_the_page_arrives(sim: Simulator, kind: str) -> None:
    sim.fail_next(kind, 2)
    counts = RequestCounts()

    page = fetch_page(settings(max_retries=3), endpoint_for(sim), counts=counts)

    assert as_records(page.numbers) == expected_records(sim)
    assert (counts.requests, counts.retries) == (3, 2)
    assert sum(counts.failures.values()) == 2
    assert sim.stats.faults_served == {kind: 2}


def test_slow_answer_past_the_timeout_is_retried_as_a_timeout() -> None:
    slow = demo_simulator(seed=3, workspaces=1, numbers_per_workspace=5, slow_s=3.0)
    with slow:
        slow.fail_next("slow")
        counts = RequestCounts()
        started = time.perf_counter()
        page = fetch_page(settings(timeout_s=0.2), endpoint_for(slow), counts=counts)
        elapsed = time.perf_counter() - started

    assert len(as_records(page.numbers)) == 5
    assert counts.failures == {"timed out": 1}
    assert counts.retries == 1
    assert elapsed < 3.0  # the client gave up on the slow answer rather than waiting it out


# --- answers that keep failing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "error_type"),
    [
        ("503", UnavailableError),
        ("500", UnavailableError),
        ("429", UnavailableError),
        ("html", UnavailableError),
        ("drop", UnavailableError),
        ("not_json", MalformedResponseError),
        ("missing_field", MalformedResponseError),
        ("wrong_type", MalformedResponseError),
    ],
)
def test_persistent_fault_ends_after_max_retries_plus_one_requests(
    sim: Simulator, kind: str, error_type: type[SynthflowError]
) -> None:
    sim.break_workspace(workspace_of(sim), kind)
    counts = RequestCounts()

    error = failure(settings(max_retries=2), endpoint_for(sim), counts=counts)

    assert type(error) is error_type
    assert sim.stats.requests == 3
    assert (counts.requests, counts.retries) == (3, 2)
    assert str(error).startswith(f"workspace {workspace_of(sim)}:")
    assert "failed 3 times" in str(error)


def test_persistent_truncation_ends_in_a_typed_error(sim: Simulator) -> None:
    sim.break_workspace(workspace_of(sim), "truncate")

    error = failure(settings(max_retries=1), endpoint_for(sim))

    assert isinstance(error, UnavailableError | MalformedResponseError)
    assert sim.stats.requests == 2


def test_unreachable_server_ends_in_unavailable_after_retries() -> None:
    closed = demo_simulator(workspaces=1, numbers_per_workspace=1)
    with closed:
        endpoint = endpoint_for(closed)
    counts = RequestCounts()

    error = failure(settings(max_retries=1), endpoint, counts=counts)

    assert isinstance(error, UnavailableError)
    assert "connection failed" in str(error)
    assert (counts.requests, counts.retries) == (2, 1)


def test_no_retries_means_one_request(sim: Simulator) -> None:
    sim.break_workspace(workspace_of(sim), "503")

    failure(settings(max_retries=0), endpoint_for(sim))

    assert sim.stats.requests == 1


# --- waiting ------------------------------------------------------------------------------------


def test_retry_after_is_capped_at_max_backoff(sim: Simulator) -> None:
    sim.fail_next("429", retry_after="86400")
    sleep = RecordingSleep()

    fetch_page(settings(max_backoff_s=30.0), endpoint_for(sim), sleep=sleep)

    assert sleep.waits == [30.0]


def test_retry_after_seconds_are_honoured_below_the_cap(sim: Simulator) -> None:
    sim.fail_next("429", retry_after="2")
    sleep = RecordingSleep()

    fetch_page(settings(max_backoff_s=30.0), endpoint_for(sim), sleep=sleep)

    assert sleep.waits == [2.0]


def test_retry_after_http_date_is_honoured(sim: Simulator) -> None:
    in_ten_seconds = email.utils.formatdate(time.time() + 10, usegmt=True)
    sim.fail_next("429", retry_after=in_ten_seconds)
    sleep = RecordingSleep()

    fetch_page(settings(max_backoff_s=30.0), endpoint_for(sim), sleep=sleep)

    (wait,) = sleep.waits
    assert 8.0 <= wait <= 10.0


def test_429_without_retry_after_backs_off_exponentially_with_jitter(sim: Simulator) -> None:
    sim.fail_next("429", 3)
    sleep = RecordingSleep()

    fetch_page(settings(max_backoff_s=30.0, max_retries=3), endpoint_for(sim), sleep=sleep)

    ceilings = [0.25, 0.5, 1.0]
    assert len(sleep.waits) == 3
    for wait, ceiling in zip(sleep.waits, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling


def test_server_errors_back_off_within_the_cap(sim: Simulator) -> None:
    sim.fail_next("503", 5)
    sleep = RecordingSleep()

    fetch_page(settings(max_backoff_s=0.4, max_retries=5), endpoint_for(sim), sleep=sleep)

    ceilings = [0.25, 0.4, 0.4, 0.4, 0.4]
    for wait, ceiling in zip(sleep.waits, ceilings, strict=True):
        assert ceiling / 2 <= wait <= ceiling


def test_429_slows_the_budget_of_that_host_and_key(sim: Simulator) -> None:
    sim.fail_next("429", retry_after="0")
    fetch = settings(requests_per_second=100.0)
    endpoint = endpoint_for(sim)

    async def go() -> float:
        async with SynthflowClient(fetch, sleep=RecordingSleep()) as client:
            await client.fetch_page(endpoint, 0, 10, RequestCounts())
            return client.budget(endpoint).rate

    # halved by the 429, then recovered a little by the success
    assert run(go()) == pytest.approx(55.0)


def test_endpoints_share_a_budget_only_with_the_same_host_and_key(sim: Simulator) -> None:
    client = SynthflowClient(settings())
    first = endpoint_for(sim)

    assert client.budget(first) is client.budget(endpoint_for(sim, "another-workspace"))
    assert client.budget(first) is not client.budget(endpoint_for(sim, key="sk-other"))


# --- Retry-After parsing --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("2", 2.0), ("0", 0.0), ("1.5", 1.5), ("-3", 0.0), ("86400", 86400.0)],
)
def test_retry_after_seconds_parses_delays(value: str, seconds: float) -> None:
    assert retry_after_seconds(value) == seconds


def test_retry_after_seconds_parses_a_future_http_date() -> None:
    value = email.utils.formatdate(time.time() + 60, usegmt=True)

    assert 58.0 <= retry_after_seconds(value) <= 60.0


def test_retry_after_seconds_treats_a_past_http_date_as_now() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


@pytest.mark.parametrize("value", [None, "", "soon", "Tomorrow at noon", "12 parsecs"])
def test_retry_after_seconds_rejects_garbage(value: str | None) -> None:
    assert retry_after_seconds(value) is None


# --- error bodies ---------------------------------------------------------------------------


def response(
    status: int, *, json: Any = None, content: bytes | None = None, headers: dict | None = None
) -> Answer:
    if json is not None:
        answer = httpx.Response(status, json=json, headers=headers)
    else:
        answer = httpx.Response(status, content=content or b"", headers=headers)
    return Answer(answer.status_code, answer.reason_phrase, answer.headers, answer.content)


def test_documented_error_body_gives_description_and_request_id() -> None:
    body = {
        "detail": {
            "status": 400,
            "description": "Workspace w1 not found",
            "request_id": "req-1",
            "category": "bad_request",
        }
    }

    assert describe_error_body(response(400, json=body), KEY) == ("Workspace w1 not found", "req-1")


def test_documented_error_body_without_request_id_falls_back_to_the_header() -> None:
    body = {"detail": {"status": 503, "description": "Service Unavailable"}}

    answer = response(503, json=body, headers={"X-Request-Id": "req-h"})

    assert describe_error_body(answer, KEY) == ("Service Unavailable", "req-h")


def test_detail_with_message_instead_of_description() -> None:
    body = {"detail": {"message": "Workspace is suspended"}}

    assert describe_error_body(response(400, json=body), KEY) == ("Workspace is suspended", None)


def test_plain_string_detail_is_the_description() -> None:
    answer = response(404, json={"detail": "Not Found"}, headers={"X-Request-Id": "req-2"})

    assert describe_error_body(answer, KEY) == ("Not Found", "req-2")


def test_validation_list_is_described_by_location_and_message() -> None:
    body = {
        "detail": [
            {"type": "missing", "loc": ["query", "workspace"], "msg": "Field required"},
            {"type": "int_parsing", "loc": ["query", "limit"], "msg": "Input should be an int"},
        ]
    }

    description, request_id = describe_error_body(response(422, json=body), KEY)

    assert description == "query.workspace: Field required; query.limit: Input should be an int"
    assert request_id is None


def test_error_and_message_body_prefers_the_message() -> None:
    body = {"error": "not_found", "message": "No such workspace", "request_id": "req-3"}

    assert describe_error_body(response(404, json=body), KEY) == ("No such workspace", "req-3")


def test_error_only_body_gives_the_error() -> None:
    assert describe_error_body(response(500, json={"error": "internal_error"}), KEY) == (
        "internal_error",
        None,
    )


def test_html_page_from_a_proxy_is_described_as_not_json() -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    answer = response(
        502, content=page, headers={"Content-Type": "text/html; charset=utf-8", "X-Request-Id": "r"}
    )

    description, request_id = describe_error_body(answer, KEY)

    assert description == f"a non-JSON answer (text/html, {len(page)} bytes)"
    assert request_id == "r"


def test_empty_body_is_described_as_not_json() -> None:
    description, _ = describe_error_body(response(503), KEY)

    assert description is not None
    assert "non-JSON" in description


def test_a_body_or_header_that_echoes_the_key_is_stripped_of_it() -> None:
    body = {"detail": {"description": f"bad header Authorization: Bearer {KEY}"}}
    answer = response(401, json=body, headers={"X-Request-Id": f"r-{KEY}"})

    description, request_id = describe_error_body(answer, KEY)
    error = error_for_status("w1", answer, KEY)

    assert description == "bad header Authorization: Bearer [redacted]"
    assert request_id == "r-[redacted]"
    assert KEY not in str(error)


def test_json_that_is_not_an_object_has_no_description() -> None:
    answer = response(500, json=["oops"], headers={"X-Request-Id": "req-4"})

    assert describe_error_body(answer, KEY) == (None, "req-4")
