"""The simulator's traffic: what it counts, and the server-side rate budget.

Decides what `SimulatorStats` holds and when a request is over the per-second budget (and so
gets a 429 with Retry-After). Not thread-safe: the Simulator calls it with its lock held.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field, replace


@dataclass
class SimulatorStats:
    """What the simulator has seen since it was made or since `reset_stats()`.

    `pages_served` counts 200 answers that carry a well-formed page (plain, "slow", "trickle"
    and "extra_fields" ones); `faults_served` counts answers shaped by `fail_next` or
    `break_workspace`; `rate_limited` counts 429s from the server-side budget.
    `max_requests_in_any_second` is the most requests that arrived within one second.
    """

    requests: int = 0
    pages_served: int = 0
    faults_served: dict[str, int] = field(default_factory=dict)
    rate_limited: int = 0
    max_requests_in_any_second: int = 0


class Traffic:
    """Counts every request and, with a budget, admits at most that many in any one second."""

    def __init__(self, requests_per_second: float | None) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, got {requests_per_second}")
        self._budget = None if requests_per_second is None else max(1, int(requests_per_second))
        self._stats = SimulatorStats()
        self._arrivals: deque[float] = deque()  # of the last second, for the busiest second
        self._admitted: deque[float] = deque()  # of the last second, against the budget

    def arrive(self, now: float) -> None:
        self._stats.requests += 1
        arrivals = self._arrivals
        arrivals.append(now)
        while arrivals[0] <= now - 1.0:
            arrivals.popleft()
        self._stats.max_requests_in_any_second = max(
            self._stats.max_requests_in_any_second, len(arrivals)
        )

    def over_budget(self, now: float) -> int | None:
        """Seconds to wait when the request breaks the per-second budget (counted), else None."""
        if self._budget is None:
            return None
        admitted = self._admitted
        while admitted and admitted[0] <= now - 1.0:
            admitted.popleft()
        if len(admitted) >= self._budget:
            self._stats.rate_limited += 1
            return max(1, math.ceil(admitted[0] + 1.0 - now))
        admitted.append(now)
        return None

    def served(self, fault: str | None, *, well_formed: bool) -> None:
        """Count one page request's answer: a well-formed page, a fault, or both."""
        if well_formed:
            self._stats.pages_served += 1
        if fault is not None:
            faults = self._stats.faults_served
            faults[fault] = faults.get(fault, 0) + 1

    def stats(self) -> SimulatorStats:
        """A copy, safe to keep while the counting goes on."""
        return replace(self._stats, faults_served=dict(self._stats.faults_served))

    def reset(self) -> None:
        self._stats = SimulatorStats()
        self._arrivals.clear()
