"""The `Simulator`: the one object tests, the demo and the command line hold.

Decides the public surface (what a test may change, switch on and observe) and the order in
which one request meets the parts: traffic budget, route and keys, faults, page. It owns the
single lock that keeps state, switches and counters consistent; encoding and sleeping happen
outside it, so concurrent requests overlap.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from types import TracebackType
from typing import Self

from pipelines.synthflow.simulator import api, faults
from pipelines.synthflow.simulator.numbers import PhoneNumber
from pipelines.synthflow.simulator.server import Server
from pipelines.synthflow.simulator.state import Workspaces
from pipelines.synthflow.simulator.traffic import SimulatorStats, Traffic


class Simulator:
    """Synthflow's `GET /v2/numbers` over real HTTP, with seeded data and fault switches."""

    def __init__(
        self,
        *,
        seed: int = 0,
        api_keys: Mapping[str, str] | None = None,
        latency_s: float = 0.0,
        page_size_cap: int | None = None,
        requests_per_second: float | None = None,
        slow_s: float = 5.0,
        trickle_interval_s: float = 1.0,
        gzip_bomb_bytes: int = 1 << 30,
    ) -> None:
        """`slow_s`: how late a "slow" answer comes; `trickle_interval_s`: the pause before
        each byte of a "trickle" body; `gzip_bomb_bytes`: what a "gzip_bomb" inflates to.
        The last two are also attributes, settable while the simulator serves.
        """
        if trickle_interval_s < 0:
            raise ValueError(f"trickle_interval_s must be 0 or more, got {trickle_interval_s}")
        if gzip_bomb_bytes < 0:
            raise ValueError(f"gzip_bomb_bytes must be 0 or more, got {gzip_bomb_bytes}")
        if page_size_cap is not None and page_size_cap < 1:
            raise ValueError(f"page_size_cap must be 1 or more, got {page_size_cap}")
        self._traffic = Traffic(requests_per_second)
        self._workspaces = Workspaces(seed)
        self._faults = faults.FaultSwitches()
        self._api_keys = dict(api_keys) if api_keys is not None else None
        self._latency_s = latency_s
        self._page_size_cap = page_size_cap
        self._slow_s = slow_s
        self.trickle_interval_s = trickle_interval_s
        self.gzip_bomb_bytes = gzip_bomb_bytes
        self._lock = threading.Lock()
        self._server = Server(self._decide)

    # --- state -----------------------------------------------------------------------------

    def add_workspace(
        self,
        workspace_id: str,
        count: int = 0,
        *,
        countries: Sequence[str] = ("US", "GB", "DE"),
        available_share: float = 0.6,
        custom_share: float = 0.1,
    ) -> list[PhoneNumber]:
        """Create a workspace holding `count` seeded numbers; returns them in listing order."""
        with self._lock:
            return self._workspaces.add(
                workspace_id, count, countries, available_share, custom_share
            )

    def workspace_ids(self) -> list[str]:
        with self._lock:
            return self._workspaces.ids()

    def numbers(self, workspace_id: str) -> list[PhoneNumber]:
        """The workspace's whole listing, in the order the API serves it."""
        with self._lock:
            return list(self._workspaces.get(workspace_id).view(None))

    def new_number(
        self, country: str = "US", *, sid: bool = True, is_available: bool = True
    ) -> PhoneNumber:
        """A valid number never handed out before and in no workspace (add it yourself)."""
        with self._lock:
            return self._workspaces.new_number(country, sid=sid, is_available=is_available)

    def add_number(self, workspace_id: str, number: PhoneNumber) -> None:
        """Append `number` to the end of the workspace's order."""
        with self._lock:
            self._workspaces.add_number(workspace_id, number)

    def remove_number(self, workspace_id: str, number: str) -> None:
        with self._lock:
            self._workspaces.remove_number(workspace_id, number)

    def set_available(self, workspace_id: str, number: str, is_available: bool) -> None:
        with self._lock:
            self._workspaces.update(workspace_id, number, is_available=is_available)

    def set_sid(self, workspace_id: str, number: str, sid: str | None) -> None:
        with self._lock:
            self._workspaces.update(workspace_id, number, sid=sid)

    def move_number(self, number: str, from_workspace: str, to_workspace: str) -> None:
        """Take `number` out of one listing and append it to another, sid and state kept."""
        with self._lock:
            self._workspaces.move_number(number, from_workspace, to_workspace)

    def clear_workspace(self, workspace_id: str) -> None:
        """Empty the listing; the workspace stays (its pages say total_records 0)."""
        with self._lock:
            self._workspaces.clear(workspace_id)

    # --- fault switches --------------------------------------------------------------------

    def fail_next(
        self,
        kind: str,
        count: int = 1,
        *,
        workspace_id: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        """Answer the next `count` page requests (of that workspace, or any) with fault `kind`.

        Faults queue up in call order. For "429", `retry_after` is sent verbatim as the
        Retry-After header (any string); without it no header is sent.
        """
        faults.check(kind, count)
        with self._lock:
            if workspace_id is not None:
                self._workspaces.get(workspace_id)
            self._faults.fail_next(kind, count, workspace_id, retry_after)

    def break_workspace(self, workspace_id: str, kind: str) -> None:
        """Every page request of the workspace gets fault `kind` until `repair_workspace()`."""
        faults.check(kind)
        with self._lock:
            self._workspaces.get(workspace_id)
            self._faults.break_workspace(workspace_id, kind)

    def repair_workspace(self, workspace_id: str) -> None:
        with self._lock:
            self._workspaces.get(workspace_id)
            self._faults.repair_workspace(workspace_id)

    def churn_while_paging(
        self, workspace_id: str, *, pages: int | None = None, add: int = 1, remove: int = 1
    ) -> None:
        """Change the front of the listing after each page served with offset > 0.

        Each such page (the next `pages` of them, or all while None) is followed by one change
        at the front of the order, alternately inserting `add` fresh numbers (later records
        shift back: a client sees repeats) and removing `remove` numbers (later records shift
        forward: a client misses some). Either way total_records moves between pages. Doing
        both at once would cancel out for add == remove and hide the churn from any client.
        """
        if add < 0 or remove < 0 or (pages is not None and pages < 0):
            raise ValueError("pages, add and remove must be 0 or more")
        with self._lock:
            self._workspaces.churn_while_paging(workspace_id, pages, add, remove)

    def duplicate_across_pages(self, workspace_id: str, count: int = 1) -> None:
        """The next `count` pages with offset > 0 start one record early (a repeat).

        The page keeps its size, so the record that should have ended it is never served and
        total_records stays right: a deduplicating client ends one short and must read again.
        """
        if count < 1:
            raise ValueError(f"count must be 1 or more, got {count}")
        with self._lock:
            self._workspaces.duplicate_across_pages(workspace_id, count)

    # --- observation -----------------------------------------------------------------------

    @property
    def stats(self) -> SimulatorStats:
        """A copy of the counters, safe to keep while the server runs."""
        with self._lock:
            return self._traffic.stats()

    def reset_stats(self) -> None:
        with self._lock:
            self._traffic.reset()

    @property
    def trickles_in_progress(self) -> int:
        """How many "trickle" answers a handler thread is sending right now."""
        return self._server.trickles_in_progress

    # --- serving ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background daemon thread; returns the base URL (ending in /v2)."""
        return self._server.start(host, port)

    def stop(self) -> None:
        """Stop serving and close every open connection. Safe to call twice."""
        self._server.stop()

    def serve_forever(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        """Serve in the calling thread until `stop()` or Ctrl-C."""
        self._server.serve_forever(host, port, on_ready)

    @property
    def base_url(self) -> str:
        return self._server.base_url

    def __enter__(self) -> Self:
        if not self._server.serving:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _decide(self, method: str, path: str, authorization: str | None) -> api.Answer:
        """The whole answer to one request; called by the server's threads without the lock."""
        request_id = str(uuid.uuid4())
        now = time.monotonic()
        with self._lock:
            decided = self._admit(method, path, authorization, request_id, now)
        # Encoding happens outside the lock: the records are immutable, and pages of a
        # thousand records would otherwise serialize every concurrent request.
        if isinstance(decided, api.Answer):
            answer = decided
        else:
            page, fault = decided
            answer = faults.answer(
                page,
                fault,
                authorization=authorization,
                slow_s=self._slow_s,
                trickle_s=self.trickle_interval_s,
                bomb_bytes=self.gzip_bomb_bytes,
            )
        if self._latency_s and method == "GET":
            answer = replace(answer, delay_s=answer.delay_s + self._latency_s)
        return answer

    def _admit(
        self, method: str, path: str, authorization: str | None, request_id: str, now: float
    ) -> api.Answer | tuple[api.Page, faults.Fault | None]:
        """Count the request, run the checks in the documented order, cut the page (locked)."""
        self._traffic.arrive(now)
        if method != "GET":
            return api.method_not_allowed(path, request_id)
        retry_after_s = self._traffic.over_budget(now)
        if retry_after_s is not None:
            return api.rate_limited(request_id, retry_after_s)
        request = api.route(
            path,
            authorization,
            request_id,
            workspaces=self._workspaces,
            api_keys=self._api_keys,
            page_size_cap=self._page_size_cap,
        )
        if isinstance(request, api.Answer):
            return request
        fault = self._faults.take(request.workspace_id)
        well_formed = fault is None or fault.kind in faults.WELL_FORMED
        total, records = self._workspaces.page(
            request.workspace_id,
            request.limit,
            request.offset,
            request.is_available,
            well_formed=well_formed,
        )
        self._traffic.served(None if fault is None else fault.kind, well_formed=well_formed)
        return api.Page(request_id, total, request.limit, request.offset, records), fault
