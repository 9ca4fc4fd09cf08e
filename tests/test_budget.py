"""The request budget: how fast requests leave, per host and key.

The contract (pipelines/synthflow/budget.py; shared/synthflow-api.md, "Errors"):
- requests are paced evenly at the rate, and no rate-worth of them starts within one second
  (plus a margin), even when a timer fires early;
- a set rate (`fetch.requests_per_second`) starts there and never exceeds it; a 429 halves it
  (never below the floor) and each good answer wins back a twentieth of it;
- by default the rate is found: it starts at a polite START_RATE, doubles on each second of
  good answers without running ahead of what is really sent, and never exceeds
  `fetch.max_requests_per_second`;
- a 429 halves the rate that failed, at most once a second (while searching, the rate the
  server counted); the rate climbs back fast to 90% of it, then slowly, and searches again
  once a fifth past it without a 429; slots taken before a halving are given up;
- against a server that allows N requests in any second, the found rate finishes a listing
  with at most 2% of requests refused, at three quarters of N or better; a set rate of N
  meets no 429 at all.

Unit tests run on a simulated clock; the last tests talk real HTTP to the simulator.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from types import SimpleNamespace
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from pipelines.config import FetchSettings
from pipelines.synthflow import budget as budget_module
from pipelines.synthflow.budget import START_RATE, BudgetRegistry, RequestBudget
from pipelines.synthflow.client import Endpoint, RequestCounts, SynthflowClient
from pipelines.synthflow.listing import read_listing
from pipelines.synthflow.simulator import demo_simulator

REAL_SLEEP = asyncio.sleep


def run(coroutine: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coroutine)


class FakeClock:
    """The budget's clock and sleep, simulated: a sleep moves the clock on by what was asked,
    less `early` (an event loop's timer that fires early), without waiting for real. With
    `yielding`, a sleep first lets other tasks run (for one sleeper at a time)."""

    def __init__(self, early: float = 0.0) -> None:
        self.now = 1000.0
        self.early = early
        self.yielding = False
        self.released: list[float] = []  # when each acquire let its request go, from t=1000

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        if self.yielding:
            await REAL_SLEEP(0)
        self.now += seconds - self.early if seconds > 2 * self.early else seconds

    def advance(self, seconds: float) -> None:
        self.now += seconds

    async def one(self, budget: RequestBudget) -> None:
        await budget.acquire()
        self.released.append(round(self.now - 1000.0, 9))

    def acquire(self, budget: RequestBudget, times: int) -> None:
        async def go() -> None:
            await asyncio.gather(*(self.one(budget) for _ in range(times)))

        run(go())

    def answered(self, budget: RequestBudget, times: int) -> None:
        """`times` requests leave at the budget's pace, and each is answered well."""
        for _ in range(times):
            self.acquire(budget, 1)
            budget.succeeded()


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(budget_module, "time", SimpleNamespace(monotonic=fake.monotonic))
    monkeypatch.setattr(
        budget_module, "asyncio", SimpleNamespace(Lock=asyncio.Lock, sleep=fake.sleep)
    )
    return fake


def found(ceiling: float = 200.0, start: float = START_RATE) -> RequestBudget:
    return RequestBudget(ceiling, start=start)


# --- pacing ---------------------------------------------------------------------------------


def test_budget_paces_acquisitions_evenly_at_its_rate(clock: FakeClock) -> None:
    clock.acquire(RequestBudget(10.0), 5)

    # the first goes at once, the others 1/rate apart: 5 requests span 5/rate seconds
    assert clock.released == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4])


def test_budget_never_lets_a_seconds_worth_of_requests_start_within_one_second(
    clock: FakeClock,
) -> None:
    """Paced exactly at the rate, the first of 11 requests could leave late and the 11th on
    time, 11 in one second to a server counting in a sliding window; the budget keeps a
    margin instead."""
    clock.acquire(RequestBudget(10.0), 35)

    starts = clock.released
    windows = [later - earlier for earlier, later in zip(starts, starts[10:], strict=False)]
    assert min(windows) >= 1.0 + budget_module.JITTER_MARGIN_S - 1e-9  # a margin past it
    assert starts[-1] < 35 / 10.0 * 1.15  # the margin costs little of the rate


def test_budget_holds_a_request_whose_timer_fired_early(clock: FakeClock) -> None:
    """uvloop's timers count from the time its loop last read, so a sleep can end before the
    time it was asked for; the request still waits for its slot."""
    clock.early = 0.03

    clock.acquire(RequestBudget(10.0), 5)

    assert clock.released == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.4], abs=0.02)
    assert all(
        released >= slot - 1e-9
        for released, slot in zip(clock.released, [0.0, 0.1, 0.2, 0.3, 0.4], strict=True)
    )


def test_budget_spaces_requests_twice_as_far_after_slow_down(clock: FakeClock) -> None:
    budget = RequestBudget(10.0)
    clock.acquire(budget, 1)
    budget.slow_down()

    clock.acquire(budget, 2)

    assert clock.released == pytest.approx([0.0, 0.2, 0.4])


def test_a_slot_taken_before_a_429_is_given_up_for_one_at_the_halved_rate(
    clock: FakeClock,
) -> None:
    """A request already waiting for its slot when the rate halves would otherwise leave at
    the old pace, into a second the server still counts as full."""
    budget = RequestBudget(10.0)
    clock.yielding = True

    async def go() -> None:
        await clock.one(budget)
        waiting = asyncio.create_task(clock.one(budget))  # its slot: 0.1
        await REAL_SLEEP(0)
        budget.slow_down()
        await waiting

    run(go())

    assert clock.released == pytest.approx([0.0, 0.2])


def test_a_request_held_up_past_its_slot_holds_back_those_after_it() -> None:
    """On a real event loop, blocked (as by a store's CPU work) while a request's slot passes:
    that request leaves late, and the ones whose slots were taken before still keep a rate's
    worth of departures over a second and the margin, counted from when each really left."""
    budget = RequestBudget(2.0)
    left: list[float] = []

    async def one() -> None:
        await budget.acquire()
        left.append(time.monotonic())

    async def go() -> None:
        await one()  # slots: 0, then 0.5, 1.05 and 1.55 for the three below
        waiting = [asyncio.create_task(one()) for _ in range(3)]
        await REAL_SLEEP(0.3)
        time.sleep(0.4)  # the loop is busy past the second request's slot (0.5): it leaves at 0.7
        await asyncio.gather(*waiting)

    run(go())

    spans = [later - earlier for earlier, later in zip(left, left[2:], strict=False)]
    assert left[1] - left[0] >= 0.65  # held up, as meant
    assert min(spans) >= 1.0 + budget_module.JITTER_MARGIN_S - 1e-3, spans


# --- a set rate -----------------------------------------------------------------------------


def test_budget_halves_on_slow_down() -> None:
    budget = RequestBudget(20.0)

    budget.slow_down()

    assert budget.rate == 10.0


def test_budget_never_drops_below_its_floor(clock: FakeClock) -> None:
    budget = RequestBudget(20.0, floor=0.5)

    for _ in range(20):
        budget.slow_down()
        clock.advance(1.0)

    assert budget.rate == 0.5


def test_budget_floor_never_exceeds_the_configured_rate() -> None:
    budget = RequestBudget(0.2)

    budget.slow_down()

    assert budget.rate == 0.2


def test_budget_recovers_gradually_on_success_up_to_its_rate() -> None:
    budget = RequestBudget(20.0, recovery=0.05)
    budget.slow_down()

    budget.succeeded()
    assert budget.rate == pytest.approx(11.0)

    for _ in range(100):
        budget.succeeded()
    assert budget.rate == 20.0


def test_a_set_rate_never_climbs_past_itself(clock: FakeClock) -> None:
    budget = RequestBudget(10.0)

    clock.answered(budget, 30)

    assert budget.rate == 10.0


def test_429s_halve_the_rate_at_most_once_a_second(clock: FakeClock) -> None:
    """The 429s right after the first answer requests sent before it: already heard."""
    budget = RequestBudget(40.0)

    budget.slow_down()
    clock.advance(0.5)
    budget.slow_down()
    assert budget.rate == 20.0

    clock.advance(0.5)
    budget.slow_down()
    assert budget.rate == 10.0


# --- a found rate ---------------------------------------------------------------------------


def test_by_default_each_host_and_key_starts_polite_under_the_configured_ceiling() -> None:
    client = SynthflowClient(FetchSettings(max_requests_per_second=150))
    endpoint = Endpoint("1700000000000x000000000000000000", "http://127.0.0.1:9", SecretStr("k"))

    budget = client.budget(endpoint)

    assert (budget.rate, budget.ceiling, budget.discovering) == (START_RATE, 150, True)


def test_a_set_rate_wins_over_the_ceiling() -> None:
    budget = BudgetRegistry(500.0, ceiling=200.0).for_endpoint("api.synthflow.ai", "k")

    assert (budget.rate, budget.ceiling, budget.discovering) == (500.0, 500.0, False)


def test_the_ceiling_must_be_positive() -> None:
    with pytest.raises(ValidationError, match="max_requests_per_second"):
        FetchSettings(max_requests_per_second=0)


def test_a_found_rate_doubles_after_a_second_of_good_answers(clock: FakeClock) -> None:
    budget = found(start=20.0)

    clock.answered(budget, 20)  # a second's worth at 20 a second

    assert budget.rate == 40.0


def test_a_found_rate_never_runs_ahead_of_the_requests_really_sent(clock: FakeClock) -> None:
    """Answers that come slowly (latency, not the budget, sets the pace) raise nothing."""
    budget = found(start=20.0)

    for _ in range(10):
        clock.answered(budget, 1)
        clock.advance(0.2)  # five requests a second

    assert budget.rate == 20.0


def test_a_found_rate_never_exceeds_its_ceiling(clock: FakeClock) -> None:
    budget = found(ceiling=30.0, start=20.0)

    clock.answered(budget, 60)

    assert budget.rate == 30.0


def test_a_429_while_searching_halves_what_the_server_counted(clock: FakeClock) -> None:
    """The rate ran to twice the last second's requests; the server refused that second."""
    budget = found(start=50.0)
    clock.answered(budget, 50)
    assert budget.rate == 100.0

    budget.slow_down()

    assert (budget.failed_rate, budget.rate) == (50.0, 25.0)


def test_after_a_429_the_rate_climbs_back_fast_to_just_under_the_failed_rate_then_slowly(
    clock: FakeClock,
) -> None:
    budget = found(start=50.0)
    clock.answered(budget, 50)
    budget.slow_down()  # failed at 50: 25

    clock.answered(budget, 8)
    assert budget.rate == pytest.approx(45.0)  # 90% of 50, in a few answers

    clock.answered(budget, 45)  # about a second at 45 a second
    assert budget.rate == pytest.approx(45.5, abs=0.05)  # half a request a second more


def test_a_fifth_past_the_failed_rate_without_a_429_the_search_resumes(
    clock: FakeClock,
) -> None:
    budget = found(start=50.0)
    clock.answered(budget, 50)
    budget.slow_down()
    budget.rate = 61.0  # past 1.2 x 50, with no 429 on the way

    budget.succeeded()

    assert budget.failed_rate is None


# --- against the simulator ------------------------------------------------------------------

SERVER_LIMIT = 20  # requests in any second


def read_against_a_limited_server(fetch: FetchSettings, pages: int) -> tuple[float, int, int, int]:
    """Read a listing of `pages` pages from a server that allows SERVER_LIMIT requests a
    second: the pages a second achieved, the requests, the 429s and the busiest second."""
    with demo_simulator(
        seed=5,
        workspaces=1,
        numbers_per_workspace=pages * fetch.page_size,
        requests_per_second=SERVER_LIMIT,
    ) as sim:
        endpoint = Endpoint(sim.workspace_ids()[0], sim.base_url, SecretStr("sk-test"))

        async def go() -> float:
            async with SynthflowClient(fetch) as client:
                # One page first, so the time measured is the budget's, not the first
                # request's start-up.
                await client.fetch_page(endpoint, 0, fetch.page_size, RequestCounts())
                sim.reset_stats()
                started = time.perf_counter()
                listing = await read_listing(client, endpoint)
                return listing.page_count / (time.perf_counter() - started)

        pages_a_second = run(go())
        stats = sim.stats
    return pages_a_second, stats.requests, stats.rate_limited, stats.max_requests_in_any_second


def test_a_found_rate_settles_near_a_servers_limit_with_few_429s() -> None:
    pages_a_second, requests, refused, _ = read_against_a_limited_server(
        FetchSettings(page_size=10), pages=100
    )

    assert refused <= 0.02 * requests
    assert pages_a_second >= 0.75 * SERVER_LIMIT


def test_a_set_rate_at_a_servers_limit_meets_no_429() -> None:
    pages_a_second, _, refused, busiest_second = read_against_a_limited_server(
        FetchSettings(page_size=10, requests_per_second=SERVER_LIMIT), pages=50
    )

    assert refused == 0
    assert busiest_second <= SERVER_LIMIT
    assert pages_a_second >= 0.85 * SERVER_LIMIT
