"""A client-side request budget: requests per second per (host, key), shared by every request.

A token bucket paced evenly (no bursts past the budget), which halves its rate when the
server answers 429 and climbs back gradually while requests succeed (AIMD).

Even pacing at exactly the server's limit still trips it: a server counting requests in a
sliding second sees the first of 51 requests arrive a little late and the 51st on time. So
besides the pacing, no `rate` requests start within one second plus `JITTER_MARGIN_S` of each
other: a second's worth of requests leaves that much room for the network to bunch them.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import deque

WINDOW_S = 1.0
JITTER_MARGIN_S = 0.05
MOST_TRACKED = 10_000  # past this many requests a second, pacing alone keeps the rate


class RequestBudget:
    """Paces requests to at most `rate` per second; safe to share between tasks of one loop."""

    def __init__(self, rate: float, *, floor: float = 0.5, recovery: float = 0.05) -> None:
        self.ceiling = rate
        self.rate = rate
        self.floor = min(floor, rate)
        self.recovery = recovery
        self._next_slot = 0.0
        # When each of the latest requests left: its slot until it is sent, then the time it
        # really went (later when the event loop was busy), so a late request still counts.
        self._sent: deque[list[float]] = deque(maxlen=max(1, min(int(rate), MOST_TRACKED)))
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for this request's slot: slots are 1/rate seconds apart, and a second's worth
        of requests spans more than a second."""
        async with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            per_window = int(self.rate)
            if 1 <= per_window <= len(self._sent):
                slot = max(slot, self._sent[-per_window][0] + WINDOW_S + JITTER_MARGIN_S)
            sent = [slot]
            self._sent.append(sent)
            self._next_slot = slot + 1.0 / self.rate
        # A timer may fire early (uvloop's count from the time its loop last read), so sleep
        # again until the slot has really come.
        while (left := slot - time.monotonic()) > 0:
            await asyncio.sleep(left)
        sent[0] = max(slot, time.monotonic())

    def slow_down(self) -> None:
        """The server said 429: halve the rate (never below the floor)."""
        self.rate = max(self.floor, self.rate / 2)

    def succeeded(self) -> None:
        """Recover a little of the budget after each success, up to the configured rate."""
        if self.rate < self.ceiling:
            self.rate = min(self.ceiling, self.rate + self.recovery * self.ceiling)


class BudgetRegistry:
    """One budget per (host, key): requests that share a key and host share its limit."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self._budgets: dict[tuple[str, str], RequestBudget] = {}

    def for_endpoint(self, host: str, api_key: str) -> RequestBudget:
        # Keyed by a digest so the registry never holds the key itself.
        key_digest = hashlib.sha256(api_key.encode()).hexdigest()
        return self._budgets.setdefault((host, key_digest), RequestBudget(self.rate))
