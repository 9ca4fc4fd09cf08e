"""A client-side request budget: requests per second per (host, key), shared by every request.

A token bucket paced evenly (no bursts past the budget), which halves its rate when the
server answers 429 and climbs back gradually while requests succeed (AIMD).
"""

from __future__ import annotations

import asyncio
import hashlib
import time


class RequestBudget:
    """Paces requests to at most `rate` per second; safe to share between tasks of one loop."""

    def __init__(self, rate: float, *, floor: float = 0.5, recovery: float = 0.05) -> None:
        self.ceiling = rate
        self.rate = rate
        self.floor = min(floor, rate)
        self.recovery = recovery
        self._next_slot = 0.0
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        """Wait for this request's slot: slots are 1/rate seconds apart."""
        async with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot)
            self._next_slot = slot + 1.0 / self.rate
        if slot > now:
            await asyncio.sleep(slot - now)

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
