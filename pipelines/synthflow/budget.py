"""A client-side request budget: requests per second per (host, key), shared by every request.

A token bucket paced evenly (no bursts past the budget). Its rate is either set or found:

- Set (`fetch.requests_per_second`): the budget starts at that rate and never exceeds it; a
  429 halves the rate and each good answer wins back `recovery` of it (AIMD).
- Found (the default): the budget starts at a polite `START_RATE` and, while answers are
  good, searches: the rate becomes `SEARCH_FACTOR` times what left in the last second, so it
  doubles about every half second, up to `fetch.max_requests_per_second`. Each step rests on
  a second the server has accepted, and the rate never runs ahead of what is really sent
  (when latency and `fetch.concurrency` set the pace instead, the rate does not climb away).
  A 429 halves the rate that failed, which the budget remembers: it climbs back fast to
  `RESUME_FRACTION` of that rate, then by only `PROBE_STEP` requests a second per second, so
  the next 429 comes many seconds later rather than at once and the rate stays near the
  server's limit. Climbing `FORGET_FRACTION` past the failed rate without a 429 shows the
  limit has moved (or the 429 was about something else), and the search resumes.

While searching, the rate runs ahead of what a server counting a sliding second has seen
(the second behind holds the slower start), so the rate that failed is the count of the last
second, not the rate. Either way, the rate halves at most once a second: the 429s that follow
at once answer requests already sent, into a second the server still counts as full.

Even pacing at exactly the server's limit still trips it: a server counting requests in a
sliding second sees the first of 51 requests arrive a little late and the 51st on time. So
besides the pacing, no `rate` requests start within one second plus `JITTER_MARGIN_S` of each
other: a second's worth of requests leaves that much room for the network to bunch them.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections import deque

WINDOW_S = 1.0
JITTER_MARGIN_S = 0.05
MOST_TRACKED = 10_000  # past this many requests a second, pacing alone keeps the rate
START_RATE = 20.0  # requests a second before the server has answered (the old fixed default)
SEARCH_FACTOR = 2.0  # searching, the rate is this many times the last second's requests
RESUME_FRACTION = 0.9  # after a 429, the share of the failed rate won back fast
PROBE_STEP = 0.5  # then, requests a second added per second of good answers
FORGET_FRACTION = 1.2  # this far past the failed rate with no 429, search again


class RequestBudget:
    """Paces requests to at most `rate` per second; safe to share between tasks of one loop.

    `ceiling` is the most the rate reaches. Without `start` the rate is set: it starts at the
    ceiling. With `start` it is found, from there.
    """

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
        # When each of the latest requests left: its slot until it is sent, then the time it
        # really went (later when the event loop was busy), so a late request still counts.
        self._sent: deque[list[float]] = deque(maxlen=max(1, min(int(ceiling), MOST_TRACKED)))
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for this request's slot: slots are 1/rate seconds apart, and a second's worth
        of requests spans more than a second."""
        while True:
            async with self._lock:
                now = time.monotonic()
                slot = max(now, self._next_slot)
                per_window = int(self.rate)
                if 1 <= per_window <= len(self._sent):
                    slot = max(slot, self._sent[-per_window][0] + WINDOW_S + JITTER_MARGIN_S)
                sent = [slot]
                self._sent.append(sent)
                self._next_slot = slot + 1.0 / self.rate
            # A timer may fire early (uvloop's count from the time its loop last read), so
            # sleep again until the slot has really come.
            while (left := slot - time.monotonic()) > 0:
                await asyncio.sleep(left)
            if sent[0] == slot:
                break
            # A 429 halved the rate while this request waited and took its slot back: taken
            # at the old rate, it would only meet another 429. It queues again at the new one.
        sent[0] = max(slot, time.monotonic())

    def slow_down(self) -> None:
        """The server said 429: halve the rate that failed (never below the floor), at most
        once a second."""
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
        # Slots taken at the old rate and not yet come are taken back; their requests queue
        # again (see acquire).
        while self._sent and self._sent[-1][0] > now:
            self._sent.pop()[0] = math.nan
        self._next_slot = (self._sent[-1][0] if self._sent else now) + 1.0 / self.rate

    def succeeded(self) -> None:
        """A good answer: a set rate wins back `recovery` of itself; a found one searches,
        or climbs back fast to just under the rate that failed and then slowly past it."""
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
        count = 0
        for sent in reversed(self._sent):
            if sent[0] > now:
                continue  # a slot taken but not yet come
            if sent[0] <= now - WINDOW_S:
                break
            count += 1
        return count


class BudgetRegistry:
    """One budget per (host, key): requests that share a key and host share its limit.

    `rate` set: every budget keeps to it, whatever `ceiling` says. None: each budget finds its
    own, from `START_RATE` up to `ceiling`.
    """

    def __init__(self, rate: float | None, ceiling: float) -> None:
        self.rate = rate
        self.ceiling = ceiling
        self._budgets: dict[tuple[str, str], RequestBudget] = {}

    def for_endpoint(self, host: str, api_key: str) -> RequestBudget:
        # Keyed by a digest so the registry never holds the key itself.
        key = (host, hashlib.sha256(api_key.encode()).hexdigest())
        if key not in self._budgets:
            self._budgets[key] = (
                RequestBudget(self.rate)
                if self.rate is not None
                else RequestBudget(self.ceiling, start=START_RATE)
            )
        return self._budgets[key]
