"""A workspace's listing is read whole and consistent, or not at all.

The contract (shared/design.md, "What must always hold"; shared/synthflow-api.md):
- a read counts only when every page reported the same total_records, no number came twice
  and the distinct numbers equal total_records; the listing then equals the workspace exactly,
  in the API's order, with sid and availability as served;
- offsets advance by the records received, so a server that silently caps the page size still
  yields everything; page_count counts the pages of the stored read only;
- an inconsistent read (numbers changing while we page, a record repeated across pages) is
  read again, at most fetch.listing_attempts times, and then fails saying what did not add up
  and that nothing was stored;
- pages after the first are fetched concurrently (never more than fetch.concurrency at once),
  and faults that retries fix in the middle of that leave the listing exact.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from pipelines.config import FetchSettings
from pipelines.synthflow.client import Endpoint, SynthflowClient
from pipelines.synthflow.errors import IncompleteListingError, UnavailableError
from pipelines.synthflow.listing import Listing, read_listing
from pipelines.synthflow.simulator import Simulator, demo_simulator

PAGE_SIZE = 10


def settings(**overrides: Any) -> FetchSettings:
    values: dict[str, Any] = {
        "page_size": PAGE_SIZE,
        "concurrency": 8,
        "requests_per_second": 1000.0,
        "max_retries": 3,
        "max_backoff_s": 0.01,
        "timeout_s": 5.0,
        "listing_attempts": 3,
    }
    return FetchSettings(**(values | overrides))


class Spy:
    """The real HTTP transport of each client a SynthflowClient opens, watched: which offsets
    were asked, how many at once.

    `after_first` runs once the first answer is in, to change the simulator mid-read.
    """

    def __init__(self, after_first: Callable[[], None] | None = None) -> None:
        self._after_first = after_first
        self.tls = httpx.create_ssl_context()  # one for all: each costs tens of ms to build
        self.offsets: list[int] = []
        self.in_flight = 0
        self.most_in_flight = 0

    def __call__(self) -> httpx.AsyncBaseTransport:
        return _Watched(self)

    def saw_an_answer(self) -> None:
        if self._after_first is not None:
            self._after_first, arm = None, self._after_first
            arm()


class _Watched(httpx.AsyncBaseTransport):
    def __init__(self, spy: Spy) -> None:
        self._spy = spy
        self._inner = httpx.AsyncHTTPTransport(verify=spy.tls)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        spy = self._spy
        spy.offsets.append(int(request.url.params["offset"]))
        spy.in_flight += 1
        spy.most_in_flight = max(spy.most_in_flight, spy.in_flight)
        try:
            answer = await self._inner.handle_async_request(request)
        finally:
            spy.in_flight -= 1
        spy.saw_an_answer()
        return answer

    async def aclose(self) -> None:
        await self._inner.aclose()


def serving(numbers: int, **options: Any) -> Simulator:
    return demo_simulator(seed=11, workspaces=1, numbers_per_workspace=numbers, **options)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with serving(40) as started:
        yield started


def workspace_of(sim: Simulator) -> str:
    return sim.workspace_ids()[0]


def state(sim: Simulator) -> list[tuple[str, str | None, bool]]:
    """What the simulator holds now, as a listing's records."""
    return [(p.number, p.sid, p.is_available) for p in sim.numbers(workspace_of(sim))]


def read(
    sim: Simulator,
    fetch: FetchSettings | None = None,
    spy: Spy | None = None,
) -> Listing:
    endpoint = Endpoint(workspace_of(sim), sim.base_url, SecretStr("sk-test"))

    async def go() -> Listing:
        async with SynthflowClient(fetch or settings(), new_transport=spy) as client:
            return await read_listing(client, endpoint)

    return asyncio.run(go())


def refusal(sim: Simulator, fetch: FetchSettings | None = None, spy: Spy | None = None) -> str:
    with pytest.raises(IncompleteListingError) as caught:
        read(sim, fetch, spy)
    return str(caught.value)


# --- exact listings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "numbers", [0, 1, PAGE_SIZE, PAGE_SIZE + 1, 95], ids=["empty", "one", "one page", "+1", "many"]
)
def test_listing_equals_the_workspace_exactly(numbers: int) -> None:
    with serving(numbers) as sim:
        listing = read(sim)

        assert listing.records == state(sim)
        assert listing.workspace_id == workspace_of(sim)
    assert listing.total_records == numbers
    assert listing.page_count == max(1, math.ceil(numbers / PAGE_SIZE))
    assert listing.attempts == 1
    assert listing.available == sum(1 for _, _, available in listing.records if available)


def test_listing_keeps_null_sids_and_both_availabilities(sim: Simulator) -> None:
    records = read(sim).records

    assert {sid is None for _, sid, _ in records} == {True, False}
    assert {available for _, _, available in records} == {True, False}


def test_taken_at_is_when_the_read_began(sim: Simulator) -> None:
    before = datetime.now(UTC)
    listing = read(sim)

    assert before <= listing.taken_at <= datetime.now(UTC)
    assert listing.taken_at.tzinfo is not None


def test_silently_capped_page_size_still_gives_everything() -> None:
    with serving(40, page_size_cap=7) as sim:
        listing = read(sim, settings(page_size=50))

        assert listing.records == state(sim)
    assert listing.page_count == math.ceil(40 / 7)
    assert listing.attempts == 1


# --- inconsistent reads -----------------------------------------------------------------------


def test_numbers_changing_while_paging_are_read_again(sim: Simulator) -> None:
    before = state(sim)
    sim.churn_while_paging(workspace_of(sim), pages=2, add=2, remove=1)

    listing = read(sim)

    assert listing.attempts == 2
    assert listing.records == state(sim)
    assert listing.records != before
    assert listing.total_records == len(before) + 1
    assert listing.page_count == math.ceil((len(before) + 1) / PAGE_SIZE)


def test_numbers_that_never_stop_changing_fail_and_store_nothing(sim: Simulator) -> None:
    sim.churn_while_paging(workspace_of(sim), pages=None)

    message = refusal(sim)

    assert message.startswith(f"workspace {workspace_of(sim)}:")
    assert "did not add up in 3 reads" in message
    assert "total_records moved" in message
    assert "nothing was stored" in message


def test_rereads_are_bounded_by_listing_attempts(sim: Simulator) -> None:
    sim.churn_while_paging(workspace_of(sim), pages=None)
    spy = Spy()

    message = refusal(sim, settings(listing_attempts=2), spy)

    assert "in 2 reads" in message
    assert spy.offsets.count(0) == 2


def test_a_number_repeated_across_pages_is_read_again(sim: Simulator) -> None:
    sim.duplicate_across_pages(workspace_of(sim))

    listing = read(sim)

    assert listing.attempts == 2
    assert listing.records == state(sim)


def test_repeats_on_every_read_fail_naming_the_repeat(sim: Simulator) -> None:
    sim.duplicate_across_pages(workspace_of(sim), count=100)

    message = refusal(sim)

    assert "came twice" in message
    assert "nothing was stored" in message


# --- concurrency and faults -----------------------------------------------------------------------


def test_pages_are_fetched_concurrently() -> None:
    # One page after another would take pages * latency_s; concurrently it takes a fraction.
    latency_s, pages = 0.1, 20
    spy = Spy()
    with serving(pages * PAGE_SIZE, latency_s=latency_s) as sim:
        listing = read(sim, settings(concurrency=20), spy)

        assert listing.records == state(sim)
    assert listing.page_count == pages
    assert listing.seconds < pages * latency_s / 2
    assert 1 < spy.most_in_flight <= 20


def test_never_more_requests_in_flight_than_the_concurrency() -> None:
    spy = Spy()
    with serving(40, latency_s=0.02) as sim:
        read(sim, settings(concurrency=2, page_size=5), spy)

    assert spy.most_in_flight == 2


def test_faults_in_the_middle_of_concurrent_paging_leave_the_listing_exact() -> None:
    kinds = ["503", "drop", "truncate", "not_json", "wrong_type", "429"]
    with serving(95) as sim:

        def arm() -> None:
            for kind in kinds:
                sim.fail_next(kind)

        listing = read(sim, settings(max_retries=len(kinds)), Spy(after_first=arm))

        assert listing.records == state(sim)
        assert sum(sim.stats.faults_served.values()) == len(kinds)
    assert listing.attempts == 1
    assert listing.counts.retries == len(kinds)
    assert listing.page_count == 10


def test_a_page_that_keeps_failing_fails_the_listing_as_unavailable(sim: Simulator) -> None:
    spy = Spy(after_first=lambda: sim.break_workspace(workspace_of(sim), "503"))

    with pytest.raises(UnavailableError) as caught:
        read(sim, settings(max_retries=1), spy)

    assert caught.value.workspace_id == workspace_of(sim)
    assert spy.offsets.count(0) == 1  # a failure retries could not fix is not read again
