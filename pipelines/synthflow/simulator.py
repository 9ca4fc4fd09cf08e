"""A loopback HTTP server that imitates Synthflow's `GET /v2/numbers`, faults included.

The shared test double of the project: tests, the demo and `synthflow-numbers simulate` point
a real HTTP client at it. It follows `synthflow-api.md` (routes, query parameters, the success
envelope, the 400/401/404/422 bodies) and never imports the project's client code.

Contract:
- `GET /v2/numbers?workspace=&limit=&offset=&is_available=` answers pages of the workspace's
  listing in an order that is stable while nothing changes; `total_records` counts after the
  `is_available` filter; serving a page costs O(page size), not O(workspace size).
- Checks run in this order: server-side rate budget (429 + Retry-After), path (404),
  `Authorization` present (401), query parameters (422), workspace known and key accepted
  (400 / 401), then switched-on faults, then the page. Tokens never appear in a body or log,
  with one exception: the "echo_key" fault echoes the Authorization header in its error
  description, so that tests can check the client strips it before showing or logging it.
- Every answer carries `X-Request-Id`; error bodies carry the same ID.
- State changes and fault switches are thread-safe; sleeps (latency, "slow", "trickle") happen
  outside the lock so concurrent requests overlap.
- Faults (`FAULT_KINDS`) are switched on for the next N page requests with `fail_next` or for
  every request of a workspace with `break_workspace`. A "trickle" answer stops within one
  `trickle_interval_s` of `stop()` and within about two of the client hanging up.
"""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import math
import random
import re
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from itertools import islice
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from pipelines.synthflow.simulator_data import (
    NumberFactory,
    PhoneNumber,
    make_sid,
    make_workspace_id,
)

__all__ = ["FAULT_KINDS", "PhoneNumber", "Simulator", "SimulatorStats", "demo_simulator"]

FAULT_KINDS = (
    "429",  # Synthflow's error body; Retry-After only when fail_next(retry_after=) gives one
    "500",  # 500, 502, 503: the status, rotating through the three error body shapes
    "502",
    "503",
    "drop",  # the connection closes without an answer
    "truncate",  # a 200 whose body stops halfway under the full Content-Length
    "not_json",  # a 200 whose body is plain text
    "html",  # a 502 nginx proxy page, text/html
    "missing_field",  # a 200 page without total_records, then one without a record's number
    "wrong_type",  # a 200 page with total_records "many", then a record's is_available "yes"
    "extra_fields",  # a well-formed 200 page with unknown fields added at every level
    "slow",  # a well-formed 200 page sent after `slow_s`
    "trickle",  # a well-formed 200 page, body sent a byte per `trickle_interval_s`
    "lying_total",  # a 200 page of the real records whose total_records is 10**12
    "bad_gzip",  # a 200 with Content-Encoding: gzip whose body is not gzip
    "gzip_bomb",  # a 200, Content-Encoding: gzip, inflating to `gzip_bomb_bytes` spaces
    "error_status",  # a 200 whose status is "error" with an empty listing and total 0
    "echo_key",  # a 500 whose error description echoes the request's Authorization header
    "missing_sid",  # a 200 page whose records have no "sid" key at all
)

_LISTING_PATH = "/v2/numbers"
_TRUE_WORDS = frozenset({"1", "true", "t", "yes", "y", "on"})
_FALSE_WORDS = frozenset({"0", "false", "f", "no", "n", "off"})
_LYING_TOTAL = 10**12
# Gzip's magic and header, then a deflate block of the reserved type 3: every decoder fails.
_NOT_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 22
_BOMB_CHUNK = 1 << 20
_PROXY_PAGE = (
    "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    "<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    "</body>\r\n</html>\r\n"
)


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


@dataclass(frozen=True)
class _Answer:
    """One HTTP answer, decided under the lock and written outside it."""

    status: int
    body: bytes
    request_id: str
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    delay_s: float = 0.0
    # "whole", "drop" (no answer at all), "truncate" (half the body) or "trickle" (the body
    # a byte at a time, `trickle_s` before each byte)
    mode: str = "whole"
    trickle_s: float = 0.0


@dataclass(frozen=True)
class _Page:
    """A page decided under the lock; `render()` encodes it outside the lock."""

    request_id: str
    total: int
    limit: int
    offset: int
    records: list[PhoneNumber]
    fault: str | None = None
    variant: int = 0  # which shape of the fault this answer takes
    retry_after: str | None = None
    # Set only for "echo_key", whose body echoes it; never in a repr.
    authorization: str | None = field(default=None, repr=False)

    def render(self, *, slow_s: float, trickle_s: float, bomb_bytes: int) -> _Answer:
        fault = self.fault
        if fault is None or fault in ("slow", "truncate", "trickle", "lying_total"):
            page = replace(self, total=_LYING_TOTAL) if fault == "lying_total" else self
            answer = _Answer(200, page.body(), self.request_id)
            if fault == "slow":
                return replace(answer, delay_s=slow_s)
            if fault == "truncate":
                return replace(answer, mode="truncate")
            if fault == "trickle":
                return replace(answer, mode="trickle", trickle_s=trickle_s)
            return answer
        if fault == "gzip_bomb":
            gzip = (("Content-Encoding", "gzip"),)
            return _Answer(200, _gzip_bomb(bomb_bytes), self.request_id, headers=gzip)
        return _fault_answer(self)

    def body(self) -> bytes:
        """The success envelope, formatted directly: about four times faster than json.dumps."""
        records = ",".join(map(_record_json, self.records))
        return (
            '{"status":"ok","response":{"pagination":'
            f'{{"total_records":{self.total},"limit":{self.limit},"offset":{self.offset}}},'
            f'"phone_numbers":[{records}]}}}}'
        ).encode()

    def envelope(self) -> dict[str, Any]:
        """The success envelope as objects, for faults that bend it."""
        pagination = {"total_records": self.total, "limit": self.limit, "offset": self.offset}
        records = [_record(p) for p in self.records]
        return {"status": "ok", "response": {"pagination": pagination, "phone_numbers": records}}


class _Workspace:
    """One workspace's listing: an insertion-ordered dict plus lazily rebuilt list views."""

    def __init__(self, countries: Sequence[str], available_share: float) -> None:
        self.by_number: dict[str, PhoneNumber] = {}
        self.countries = tuple(countries)
        self.available_share = available_share
        self.broken: str | None = None
        self.churn_pages: int | None = 0  # 0: off; None: forever
        self.churn_add = 0
        self.churn_remove = 0
        self.churn_events = 0
        self.duplicate_pages = 0
        self._views: dict[bool | None, list[PhoneNumber]] = {}

    def view(self, is_available: bool | None) -> list[PhoneNumber]:
        cached = self._views.get(is_available)
        if cached is None:
            everything = self._views.get(None)
            if everything is None:
                everything = self._views[None] = list(self.by_number.values())
            if is_available is None:
                cached = everything
            else:
                cached = [p for p in everything if p.is_available is is_available]
                self._views[is_available] = cached
        return cached

    def changed(self) -> None:
        self._views.clear()

    def put(self, record: PhoneNumber) -> None:
        self.by_number[record.number] = record  # an existing key keeps its place in the order
        self.changed()

    def pop(self, number: str) -> PhoneNumber:
        record = self.by_number.pop(number)
        self.changed()
        return record

    def prepend(self, records: Sequence[PhoneNumber]) -> None:
        fresh = {record.number: record for record in records}
        fresh.update(self.by_number)
        self.by_number = fresh
        self.changed()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not hold up stop()
    request_queue_size = 1024
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], simulator: Simulator) -> None:
        self.simulator = simulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that hung up (timeout, cancelled read, stop()) is normal traffic here;
        # anything else is a simulator bug and keeps its traceback.
        if not isinstance(sys.exc_info()[1], OSError):
            super().handle_error(request, client_address)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = 120  # seconds an idle keep-alive connection is kept
    server: _Server

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        pass  # silent: request lines would only clutter test and demo output

    def parse_request(self) -> bool:
        self.arrived = time.monotonic()  # the request line is in; its latency counts from here
        return super().parse_request()

    def do_GET(self) -> None:
        simulator = self.server.simulator
        answer = simulator._answer(self.path, self.headers.get("Authorization"))
        # Latency is the time from the request's arrival to its answer, so the simulator's own
        # work (parsing, deciding, encoding, waiting for its GIL) is part of it, not added on.
        wait_s = self.arrived + answer.delay_s - time.monotonic()
        if wait_s > 0:
            simulator._stopping.wait(wait_s)
        self._write(answer)

    def _not_allowed(self) -> None:
        length = self.headers.get("Content-Length", "")
        if length.isdigit():
            self.rfile.read(min(int(length), 1 << 20))
        # Whatever of a body is left unread must not pass for the next request.
        self.close_connection = True
        self._write(self.server.simulator._method_not_allowed(self.path))

    do_POST = do_PUT = do_PATCH = do_DELETE = _not_allowed

    def _write(self, answer: _Answer) -> None:
        if answer.mode == "drop":
            self.close_connection = True
            return
        head = [
            f"HTTP/1.1 {answer.status} {HTTPStatus(answer.status).phrase}",
            f"Date: {self.date_time_string()}",
            "Server: synthflow-simulator",
            f"Content-Type: {answer.content_type}",
            f"Content-Length: {len(answer.body)}",
            f"X-Request-Id: {answer.request_id}",
            *(f"{name}: {value}" for name, value in answer.headers),
        ]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        body = answer.body
        if answer.mode == "trickle":
            self._trickle(head_bytes, body, answer.trickle_s)
            return
        if answer.mode == "truncate":
            body = body[: len(body) // 2]
            self.close_connection = True
        # One write for head and body: two small writes would meet Nagle and delayed ACKs.
        self.wfile.write(head_bytes + body)

    def _trickle(self, head: bytes, body: bytes, interval_s: float) -> None:
        """The head at once, then the body a byte per `interval_s`, until done or abandoned.

        A client that hung up shows as a failed write (the first write after its FIN may still
        succeed, so that takes up to two intervals); `stop()` sets `_stopping`, which ends the
        wait at once. Either way the thread returns instead of dribbling into the void.
        """
        simulator = self.server.simulator
        simulator._trickle_started()
        try:
            self.wfile.write(head)
            for at in range(len(body)):
                if simulator._stopping.wait(interval_s):
                    self.close_connection = True  # the promised Content-Length will not come
                    return
                self.wfile.write(body[at : at + 1])
        except OSError:  # BrokenPipe, ConnectionReset, or the socket shut by stop()
            self.close_connection = True
        finally:
            simulator._trickle_ended()


def _json(payload: Any) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _record(p: PhoneNumber) -> dict[str, Any]:
    return {"number": p.number, "sid": p.sid, "is_available": p.is_available}


def _json_string(text: str) -> str:
    if '"' in text or "\\" in text or not text.isprintable():
        return json.dumps(text)
    return f'"{text}"'


def _record_json(p: PhoneNumber) -> str:
    sid = "null" if p.sid is None else _json_string(p.sid)
    available = "true" if p.is_available else "false"
    return f'{{"number":{_json_string(p.number)},"sid":{sid},"is_available":{available}}}'


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
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError(f"requests_per_second must be positive, got {requests_per_second}")
        self._factory = NumberFactory(seed)
        self._api_keys = dict(api_keys) if api_keys is not None else None
        self._latency_s = latency_s
        self._page_size_cap = page_size_cap
        self._budget = None if requests_per_second is None else max(1, int(requests_per_second))
        self._slow_s = slow_s
        self.trickle_interval_s = trickle_interval_s
        self.gzip_bomb_bytes = gzip_bomb_bytes
        self._trickling = 0
        self._lock = threading.Lock()
        self._workspaces: dict[str, _Workspace] = {}
        self._owner: dict[str, str] = {}  # number -> workspace that lists it
        self._pending: list[list[Any]] = []  # [kind, remaining, workspace_id | None, retry_after]
        self._rotation: dict[str, int] = {}  # which body variant a fault kind shows next
        self._stats = SimulatorStats()
        self._arrivals: deque[float] = deque()
        self._admitted: deque[float] = deque()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()

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
            if workspace_id in self._workspaces:
                raise ValueError(f"workspace {workspace_id} already exists")
            records = self._factory.records(count, countries, available_share, custom_share)
            workspace = _Workspace(countries, available_share)
            workspace.by_number = {record.number: record for record in records}
            self._owner.update(dict.fromkeys(workspace.by_number, workspace_id))
            self._workspaces[workspace_id] = workspace
            return records

    def workspace_ids(self) -> list[str]:
        with self._lock:
            return list(self._workspaces)

    def numbers(self, workspace_id: str) -> list[PhoneNumber]:
        """The workspace's whole listing, in the order the API serves it."""
        with self._lock:
            return list(self._workspace(workspace_id).view(None))

    def new_number(
        self, country: str = "US", *, sid: bool = True, is_available: bool = True
    ) -> PhoneNumber:
        """A valid number never handed out before and in no workspace (add it yourself)."""
        with self._lock:
            number = self._factory.fresh_number(country)
            record_sid = make_sid(self._factory.rng) if sid else None
            return PhoneNumber(number, record_sid, is_available)

    def add_number(self, workspace_id: str, number: PhoneNumber) -> None:
        """Append `number` to the end of the workspace's order."""
        with self._lock:
            workspace = self._workspace(workspace_id)
            owner = self._owner.get(number.number)
            if owner is not None:
                raise ValueError(
                    f"{number.number} is already in workspace {owner}; use move_number() "
                    "or remove_number() first"
                )
            self._factory.reserve(number.number)
            workspace.put(number)
            self._owner[number.number] = workspace_id

    def remove_number(self, workspace_id: str, number: str) -> None:
        with self._lock:
            self._take(workspace_id, number)

    def set_available(self, workspace_id: str, number: str, is_available: bool) -> None:
        with self._lock:
            workspace = self._workspace(workspace_id)
            record = self._record(workspace_id, number)
            workspace.put(replace(record, is_available=is_available))

    def set_sid(self, workspace_id: str, number: str, sid: str | None) -> None:
        with self._lock:
            workspace = self._workspace(workspace_id)
            workspace.put(replace(self._record(workspace_id, number), sid=sid))

    def move_number(self, number: str, from_workspace: str, to_workspace: str) -> None:
        """Take `number` out of one listing and append it to another, sid and state kept."""
        with self._lock:
            target = self._workspace(to_workspace)
            record = self._take(from_workspace, number)
            target.put(record)
            self._owner[number] = to_workspace

    def clear_workspace(self, workspace_id: str) -> None:
        """Empty the listing; the workspace stays (its pages say total_records 0)."""
        with self._lock:
            workspace = self._workspace(workspace_id)
            for number in workspace.by_number:
                del self._owner[number]
            workspace.by_number = {}
            workspace.changed()

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
        _check_kind(kind)
        if count < 1:
            raise ValueError(f"count must be 1 or more, got {count}")
        with self._lock:
            if workspace_id is not None:
                self._workspace(workspace_id)
            self._pending.append([kind, count, workspace_id, retry_after])

    def break_workspace(self, workspace_id: str, kind: str) -> None:
        """Every page request of the workspace gets fault `kind` until `repair_workspace()`."""
        _check_kind(kind)
        with self._lock:
            self._workspace(workspace_id).broken = kind

    def repair_workspace(self, workspace_id: str) -> None:
        with self._lock:
            self._workspace(workspace_id).broken = None

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
            workspace = self._workspace(workspace_id)
            workspace.churn_pages = pages
            workspace.churn_add = add
            workspace.churn_remove = remove
            workspace.churn_events = 0

    def duplicate_across_pages(self, workspace_id: str, count: int = 1) -> None:
        """The next `count` pages with offset > 0 start one record early (a repeat).

        The page keeps its size, so the record that should have ended it is never served and
        total_records stays right: a deduplicating client ends one short and must read again.
        """
        if count < 1:
            raise ValueError(f"count must be 1 or more, got {count}")
        with self._lock:
            self._workspace(workspace_id).duplicate_pages += count

    # --- observation -----------------------------------------------------------------------

    @property
    def stats(self) -> SimulatorStats:
        """A copy of the counters, safe to keep while the server runs."""
        with self._lock:
            return replace(self._stats, faults_served=dict(self._stats.faults_served))

    def reset_stats(self) -> None:
        with self._lock:
            self._stats = SimulatorStats()
            self._arrivals.clear()

    @property
    def trickles_in_progress(self) -> int:
        """How many "trickle" answers a handler thread is sending right now."""
        with self._lock:
            return self._trickling

    # --- serving ---------------------------------------------------------------------------

    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        """Serve in a background daemon thread; returns the base URL (ending in /v2)."""
        server = self._bind(host, port)
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},  # how long stop() waits at most
            name="synthflow-simulator",
            daemon=True,
        )
        self._thread.start()
        return self.base_url

    def stop(self) -> None:
        """Stop serving and close every open connection. Safe to call twice."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        if thread is not None:
            thread.join()
            self._close()

    def serve_forever(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        on_ready: Callable[[str], None] | None = None,
    ) -> None:
        """Serve in the calling thread until `stop()` or Ctrl-C."""
        server = self._bind(host, port)
        try:
            if on_ready is not None:
                on_ready(self.base_url)
            server.serve_forever(poll_interval=0.2)
        except KeyboardInterrupt:
            pass
        finally:
            self._close()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not serving; call start() first")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v2"

    def __enter__(self) -> Self:
        if self._server is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def _bind(self, host: str, port: int) -> _Server:
        if self._server is not None:
            raise RuntimeError(f"the simulator is already serving at {self.base_url}")
        self._stopping.clear()
        self._server = _Server((host, port), self)
        return self._server

    def _close(self) -> None:
        server = self._server
        if server is None:
            return
        self._server = self._thread = None
        self._stopping.set()
        server.server_close()
        server.close_connections()

    # --- internals (called with the lock held unless said otherwise) -----------------------

    def _workspace(self, workspace_id: str) -> _Workspace:
        try:
            return self._workspaces[workspace_id]
        except KeyError:
            raise KeyError(f"no workspace {workspace_id!r} in the simulator") from None

    def _record(self, workspace_id: str, number: str) -> PhoneNumber:
        try:
            return self._workspace(workspace_id).by_number[number]
        except KeyError:
            raise KeyError(f"{number} is not in workspace {workspace_id}") from None

    def _take(self, workspace_id: str, number: str) -> PhoneNumber:
        self._record(workspace_id, number)
        del self._owner[number]
        return self._workspaces[workspace_id].pop(number)

    def _trickle_started(self) -> None:
        """Called without the lock by the handler."""
        with self._lock:
            self._trickling += 1

    def _trickle_ended(self) -> None:
        """Called without the lock by the handler."""
        with self._lock:
            self._trickling -= 1

    def _method_not_allowed(self, path: str) -> _Answer:
        """Called without the lock by the handler."""
        request_id = str(uuid.uuid4())
        with self._lock:
            self._arrive(time.monotonic())
        if urlsplit(path).path == _LISTING_PATH:
            return _Answer(405, _json({"detail": "Method Not Allowed"}), request_id)
        return _Answer(404, _json({"detail": "Not Found"}), request_id)

    def _answer(self, path: str, authorization: str | None) -> _Answer:
        """Decide the whole answer to one GET. Called without the lock by the handler."""
        request_id = str(uuid.uuid4())
        now = time.monotonic()
        with self._lock:
            self._arrive(now)
            retry_after = self._over_budget(now)
            if retry_after is not None:
                self._stats.rate_limited += 1
                decided: _Answer | _Page = _error(
                    429,
                    "Too many requests; retry later",
                    request_id,
                    "rate_limited",
                    headers=(("Retry-After", str(retry_after)),),
                )
            else:
                decided = self._route(path, authorization, request_id)
        # Encoding happens outside the lock: the records are immutable, and pages of a
        # thousand records would otherwise serialize every concurrent request.
        if isinstance(decided, _Page):
            answer = decided.render(
                slow_s=self._slow_s,
                trickle_s=self.trickle_interval_s,
                bomb_bytes=self.gzip_bomb_bytes,
            )
        else:
            answer = decided
        if self._latency_s:
            answer = replace(answer, delay_s=answer.delay_s + self._latency_s)
        return answer

    def _arrive(self, now: float) -> None:
        self._stats.requests += 1
        arrivals = self._arrivals
        arrivals.append(now)
        while arrivals[0] <= now - 1.0:
            arrivals.popleft()
        self._stats.max_requests_in_any_second = max(
            self._stats.max_requests_in_any_second, len(arrivals)
        )

    def _over_budget(self, now: float) -> int | None:
        """Seconds to wait when the request breaks the per-second budget, else None."""
        if self._budget is None:
            return None
        admitted = self._admitted
        while admitted and admitted[0] <= now - 1.0:
            admitted.popleft()
        if len(admitted) >= self._budget:
            return max(1, math.ceil(admitted[0] + 1.0 - now))
        admitted.append(now)
        return None

    def _route(self, path: str, authorization: str | None, request_id: str) -> _Answer | _Page:
        url = urlsplit(path)
        if url.path != _LISTING_PATH:
            return _Answer(404, _json({"detail": "Not Found"}), request_id)
        token = _bearer_token(authorization)
        if token is None:
            description = (
                "Missing API key: send it as 'Authorization: Bearer <key>'"
                if not (authorization or "").strip()
                else "Malformed Authorization header: expected 'Bearer <key>'"
            )
            return _error(401, description, request_id, "unauthorized")
        query, problems = _parse_query(parse_qs(url.query, keep_blank_values=True))
        if problems:
            return _Answer(422, _json({"detail": problems}), request_id)
        workspace_id, limit, offset, is_available = query
        workspace = self._workspaces.get(workspace_id)
        if workspace is None and self._key_known(token):
            return _error(400, f"Workspace {workspace_id} not found", request_id, "bad_request")
        if workspace is None or not self._key_accepted(workspace_id, token):
            return _error(
                401, f"Invalid API key for workspace {workspace_id}", request_id, "unauthorized"
            )
        if self._page_size_cap is not None:
            limit = min(limit, self._page_size_cap)
        page = self._page(workspace_id, workspace, limit, offset, is_available, request_id)
        if page.fault == "echo_key":
            page = replace(page, authorization=authorization)
        return page

    def _key_known(self, token: str) -> bool:
        if self._api_keys is None:
            return True
        return any(_same_secret(token, key) for key in self._api_keys.values())

    def _key_accepted(self, workspace_id: str, token: str) -> bool:
        if self._api_keys is None:
            return True
        expected = self._api_keys.get(workspace_id)
        return expected is not None and _same_secret(token, expected)

    def _page(
        self,
        workspace_id: str,
        workspace: _Workspace,
        limit: int,
        offset: int,
        is_available: bool | None,
        request_id: str,
    ) -> _Page:
        kind, retry_after = self._next_fault(workspace_id, workspace)
        listing = workspace.view(is_available)
        total = len(listing)
        well_formed = kind in (None, "slow", "trickle", "extra_fields")
        start = offset
        if well_formed and workspace.duplicate_pages and 0 < offset < total:
            workspace.duplicate_pages -= 1
            start = offset - 1  # the previous page's last record comes again
        page = _Page(request_id, total, limit, offset, listing[start : start + limit])
        if well_formed:
            self._stats.pages_served += 1
            if offset > 0:
                self._churn(workspace_id, workspace)
        if kind is not None:
            self._stats.faults_served[kind] = self._stats.faults_served.get(kind, 0) + 1
            variant = self._rotation.get(kind, 0)
            self._rotation[kind] = variant + 1
            page = replace(page, fault=kind, variant=variant, retry_after=retry_after)
        return page

    def _next_fault(
        self, workspace_id: str, workspace: _Workspace
    ) -> tuple[str | None, str | None]:
        if workspace.broken is not None:
            return workspace.broken, None
        for entry in self._pending:
            kind, _, target, retry_after = entry
            if target is None or target == workspace_id:
                entry[1] -= 1
                if entry[1] == 0:
                    self._pending.remove(entry)
                return kind, retry_after
        return None, None

    def _churn(self, workspace_id: str, workspace: _Workspace) -> None:
        if workspace.churn_pages == 0:
            return
        if workspace.churn_pages is not None:
            workspace.churn_pages -= 1
        steps = [step for step in ("add", "remove") if getattr(workspace, f"churn_{step}") > 0]
        if not steps:
            return
        step = steps[workspace.churn_events % len(steps)]
        workspace.churn_events += 1
        rng = self._factory.rng
        if step == "add":
            fresh = [
                PhoneNumber(
                    self._factory.fresh_number(rng.choice(workspace.countries)),
                    make_sid(rng),
                    rng.random() < workspace.available_share,
                )
                for _ in range(workspace.churn_add)
            ]
            workspace.prepend(fresh)
            self._owner.update(dict.fromkeys((p.number for p in fresh), workspace_id))
        else:
            for number in list(islice(workspace.by_number, workspace.churn_remove)):
                self._take(workspace_id, number)


def _check_kind(kind: str) -> None:
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; choose one of {', '.join(FAULT_KINDS)}")


def demo_simulator(
    *, seed: int = 0, workspaces: int = 3, numbers_per_workspace: int = 40, **settings: Any
) -> Simulator:
    """A simulator with `workspaces` seeded workspaces whose IDs look like Synthflow's."""
    simulator = Simulator(seed=seed, **settings)
    id_rng = random.Random(f"workspace-ids:{seed}")  # its own stream: IDs do not shift numbers
    for _ in range(workspaces):
        simulator.add_workspace(make_workspace_id(id_rng), numbers_per_workspace)
    return simulator


def _same_secret(given: str, expected: str) -> bool:
    # Bytes, because compare_digest refuses non-ASCII str and header values can be anything.
    return hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode("utf-8"))


def _bearer_token(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").strip().partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


_INTEGER = re.compile(r"[+-]?[0-9]+")


def _parse_query(
    query: dict[str, list[str]],
) -> tuple[tuple[str, int, int, bool | None], list[dict[str, Any]]]:
    """The listing's query parameters, or FastAPI-style validation problems (last value wins)."""
    problems: list[dict[str, Any]] = []
    workspace_values = query.get("workspace")
    if not workspace_values:
        problems.append(
            {
                "type": "missing",
                "loc": ["query", "workspace"],
                "msg": "Field required",
                "input": None,
            }
        )
    limit = _integer(query, "limit", 20, 1, problems)
    offset = _integer(query, "offset", 0, 0, problems)
    is_available: bool | None = None
    if "is_available" in query:
        raw = query["is_available"][-1]
        if raw.strip().lower() in _TRUE_WORDS:
            is_available = True
        elif raw.strip().lower() in _FALSE_WORDS:
            is_available = False
        else:
            problems.append(
                {
                    "type": "bool_parsing",
                    "loc": ["query", "is_available"],
                    "msg": "Input should be a valid boolean, unable to interpret input",
                    "input": raw,
                }
            )
    workspace_id = workspace_values[-1] if workspace_values else ""
    return (workspace_id, limit, offset, is_available), problems


def _integer(
    query: dict[str, list[str]], name: str, default: int, minimum: int, problems: list[Any]
) -> int:
    if name not in query:
        return default
    raw = query[name][-1]
    if not _INTEGER.fullmatch(raw.strip()):
        problems.append(
            {
                "type": "int_parsing",
                "loc": ["query", name],
                "msg": "Input should be a valid integer, unable to parse string as an integer",
                "input": raw,
            }
        )
        return default
    value = int(raw)
    if value < minimum:
        problems.append(
            {
                "type": "greater_than_equal",
                "loc": ["query", name],
                "msg": f"Input should be greater than or equal to {minimum}",
                "input": raw,
                "ctx": {"ge": minimum},
            }
        )
        return default
    return value


def _error(
    status: int,
    description: str,
    request_id: str,
    category: str,
    *,
    headers: tuple[tuple[str, str], ...] = (),
) -> _Answer:
    """Synthflow's documented error shape."""
    detail = {
        "status": status,
        "description": description,
        "request_id": request_id,
        "category": category,
    }
    return _Answer(status, _json({"detail": detail}), request_id, headers=headers)


_SERVER_ERRORS = {
    500: ("internal_error", "Internal Server Error"),
    502: ("bad_gateway", "Bad Gateway"),
    503: ("service_unavailable", "Service Unavailable"),
}


def _fault_answer(page: _Page) -> _Answer:
    """The answer for a fault that is not a plain page; `page.variant` rotates its shapes."""
    kind, request_id = page.fault, page.request_id
    if kind == "429":
        retry_after = page.retry_after
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return _error(429, "Too Many Requests", request_id, "rate_limited", headers=headers)
    if kind in ("500", "502", "503"):
        status = int(kind)
        category, reason = _SERVER_ERRORS[status]
        shapes: list[dict[str, Any]] = [
            {
                "detail": {
                    "status": status,
                    "description": reason,
                    "request_id": request_id,
                    "category": category,
                }
            },
            {"detail": reason},
            {"error": category, "message": f"{reason}: please retry the request"},
        ]
        return _Answer(status, _json(shapes[page.variant % len(shapes)]), request_id)
    if kind == "html":
        return _Answer(502, _PROXY_PAGE.encode(), request_id, content_type="text/html")
    if kind == "drop":
        return _Answer(0, b"", request_id, mode="drop")
    if kind == "not_json":
        body = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
        return _Answer(200, body, request_id)
    if kind == "bad_gzip":
        return _Answer(200, _NOT_GZIP, request_id, headers=(("Content-Encoding", "gzip"),))
    if kind == "echo_key":
        # The one body that carries a token: clients must strip it before showing the error.
        description = f"upstream rejected header Authorization: {page.authorization}"
        return _error(500, description, request_id, "internal_error")
    if kind == "error_status":
        pagination = {"total_records": 0, "limit": page.limit, "offset": page.offset}
        envelope = {"status": "error", "response": {"pagination": pagination, "phone_numbers": []}}
        return _Answer(200, _json(envelope), request_id)
    envelope = page.envelope()
    pagination = envelope["response"]["pagination"]
    records = envelope["response"]["phone_numbers"]
    middle = len(records) // 2
    if kind == "missing_field":
        if page.variant % 2 == 1 and records:
            del records[middle]["number"]
        else:
            del pagination["total_records"]
    elif kind == "wrong_type":
        if page.variant % 2 == 1 and records:
            records[middle]["is_available"] = "yes"
        else:
            pagination["total_records"] = "many"
    elif kind == "missing_sid":
        for record in records:
            del record["sid"]
    elif kind == "extra_fields":
        envelope["request_id"] = request_id
        envelope["api_version"] = "2026-01"
        pagination["has_more"] = page.offset + len(records) < page.total
        pagination["cursor"] = None
        for record in records:
            record["friendly_name"] = record["number"]
            record["provider_name"] = "twilio" if record["sid"] else "custom"
            record["assistants"] = []
    return _Answer(200, _json(envelope), request_id)


@functools.lru_cache(maxsize=4)
def _gzip_bomb(size: int) -> bytes:
    """One gzip member that inflates to `size` spaces; about 1 KB per MB, cached per size.

    A megabyte of spaces is deflated once and ended with a full flush: that makes the piece a
    byte-aligned run of non-final blocks that refers to nothing before it, so the piece
    repeated is a valid deflate stream and 1 GB costs a CRC pass, not a compression. One
    member, not concatenated ones: some decoders (httpx's) stop after the first member.
    """
    chunk = b" " * _BOMB_CHUNK
    whole, rest = divmod(size, _BOMB_CHUNK)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(whole):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(chunk[:rest], crc)
    ending = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    last = ending.compress(chunk[:rest]) + ending.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, no time
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + piece * whole + last + trailer
