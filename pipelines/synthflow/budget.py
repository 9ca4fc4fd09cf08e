"""A request budget per (host, key): requests a second, paced evenly, shared by every request.

A set rate is kept to, halved on a 429 and won back on good answers. A found rate (the default)
grows with what the server accepts and, after a 429, settles just under the rate that failed.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import math
import time
from collections import deque

WINDOW_S = 1.0
JITTER_MARGIN_S = 0.05  # a rate's worth spans a second and this: the network bunches requests
MOST_TRACKED = 10_000  # past this many requests a second, pacing alone keeps the rate
START_RATE = 40.0  # requests a second before the server has answered
SEARCH_FACTOR = 2.0  # searching, the rate is this many times the last second's requests
RESUME_FRACTION = 0.9  # after a 429, the share of the rate that failed won back fast
PROBE_STEP = 0.5  # then, requests a second added per second of good answers
FORGET_FRACTION = 1.2  # this far past the rate that failed with no 429, search again


class RequestBudget:
    """At most `rate` requests a second, set or found from `start`, for one event loop's tasks."""

    def __init__(
        self,
        ceiling: float,
        *,
        start: float | None = None,
        floor: float = 0.5,
        recovery: float = 0.05,
    ) -> None:
        self.ceiling = ceiling
        self.discovering = start is not None
        self.rate = ceiling if start is None else min(start, ceiling)
        self.floor = min(floor, self.rate)
        self.recovery = recovery
        self.failed_rate: float | None = None  # a found rate's last halving started here
        self._calm_until = -math.inf  # 429s until then answer requests sent before a halving
        self._next_slot = 0.0
        tracked = max(1, min(int(ceiling), MOST_TRACKED))
        self._slots: deque[list[float]] = deque(maxlen=tracked)  # [slot]; NaN once taken back
        self._left: deque[float] = deque(maxlen=tracked)  # when each request really left

    async def acquire(self) -> None:
        """Wait for this request's turn: slots 1/rate apart, and never a rate's worth of
        requests leaving within WINDOW_S and a margin, counted when each really left (one held
        up past its slot, by a busy event loop, holds back those after it)."""
        while True:
            slot = max(time.monotonic(), self._next_slot)
            taken = [slot]
            self._slots.append(taken)
            self._next_slot = slot + 1.0 / self.rate
            # A timer may fire early (uvloop counts from when its loop last read the clock).
            while (wait := self._turn(slot) - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            if taken[0] == slot:
                break
            # A 429 took this slot back while it waited: queue again at the halved rate.
        self._left.append(time.monotonic())

    def _turn(self, slot: float) -> float:
        """When a request of this slot may leave, after the requests that really left."""
        per_window = int(self.rate)
        if 1 <= per_window <= len(self._left):
            return max(slot, self._left[-per_window] + WINDOW_S + JITTER_MARGIN_S)
        return slot

    def slow_down(self) -> None:
        """A 429: halve the rate that failed, at most once a second and never below the floor."""
        now = time.monotonic()
        if now < self._calm_until:
            return
        self._calm_until = now + WINDOW_S
        failed = self.rate
        if self.discovering and self.failed_rate is None:
            # Searching, the rate ran up to twice what the server counted: the count failed.
            failed = min(failed, max(failed / 2, self._left_within_a_second(now)))
        self.failed_rate = failed
        self.rate = max(self.floor, failed / 2)
        # Slots taken at the old rate and not yet come are taken back (see acquire).
        while self._slots and self._slots[-1][0] > now:
            self._slots.pop()[0] = math.nan
        self._next_slot = (self._slots[-1][0] if self._slots else now) + 1.0 / self.rate

    def succeeded(self) -> None:
        """A good answer: a set rate recovers, a found one searches or climbs back."""
        if self.rate >= self.ceiling:
            return
        failed = self.failed_rate
        if not self.discovering:
            rate = self.rate + self.recovery * self.ceiling
        elif failed is None or self.rate > FORGET_FRACTION * failed:
            self.failed_rate = None
            rate = max(self.rate, SEARCH_FACTOR * self._left_within_a_second(time.monotonic()))
        elif self.rate < RESUME_FRACTION * failed:
            rate = min(self.rate + self.recovery * failed, RESUME_FRACTION * failed)
        else:
            rate = self.rate + PROBE_STEP / self.rate
        self.rate = min(self.ceiling, rate)

    def _left_within_a_second(self, now: float) -> int:
        """How many requests left in the second before `now`: what a server counts."""
        return sum(
            1 for _ in itertools.takewhile(lambda t: t > now - WINDOW_S, reversed(self._left))
        )


class BudgetRegistry:
    """One budget per (host, key), as the server limits: kept to `rate` if set (whatever
    `ceiling` says), else found from START_RATE up to `ceiling`."""

    def __init__(self, rate: float | None, ceiling: float) -> None:
        self.rate = rate
        self.ceiling = ceiling
        self._budgets: dict[tuple[str, str], RequestBudget] = {}

    def for_endpoint(self, host: str, api_key: str) -> RequestBudget:
        key = (host, hashlib.sha256(api_key.encode()).hexdigest())  # never the key itself
        if key not in self._budgets:
            start = START_RATE if self.rate is None else None
            self._budgets[key] = RequestBudget(self.rate or self.ceiling, start=start)
        return self._budgets[key]
