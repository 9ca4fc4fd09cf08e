"""A workspace's whole listing, read consistently or not at all.

The API has no sort order or snapshot isolation: a number added or removed while we page
shifts every later offset. So a read counts only when every page reported the same
`total_records`, no number came twice and the distinct numbers equal that total
(shared/design.md, "What must always hold"). Otherwise the listing is read again, a bounded
number of times, and then the workspace fails with what did not add up.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pipelines.synthflow.client import Endpoint, Page, Record, RequestCounts, SynthflowClient
from pipelines.synthflow.errors import IncompleteListingError


@dataclass
class Listing:
    """One consistent read: every number once, in the order the API gave them."""

    workspace_id: str
    taken_at: datetime
    total_records: int
    records: list[Record]
    page_count: int
    counts: RequestCounts
    attempts: int
    seconds: float = 0.0

    @property
    def available(self) -> int:
        return sum(1 for _, _, is_available in self.records if is_available)


class InconsistentRead(Exception):
    """This read disagreed with itself; the reason says how."""


@dataclass
class _Read:
    """The pages of one attempt, checked as they arrive."""

    total_records: int
    pages: list[Page] = field(default_factory=list)

    def add(self, page: Page) -> None:
        if page.total_records != self.total_records:
            raise InconsistentRead(
                f"total_records moved from {self.total_records} to {page.total_records} "
                f"while paging (page at offset {page.offset})"
            )
        self.pages.append(page)

    def records(self) -> list[Record]:
        seen: dict[str, Record] = {}
        repeated = 0
        for page in sorted(self.pages, key=lambda page: page.offset):
            for record in page.records:
                if record[0] in seen:
                    repeated += 1
                else:
                    seen[record[0]] = record
        if repeated:
            raise InconsistentRead(f"{repeated} number(s) came twice across pages")
        if len(seen) != self.total_records:
            raise InconsistentRead(
                f"collected {len(seen)} distinct numbers but total_records is {self.total_records}"
            )
        return list(seen.values())


async def _read_span(
    client: SynthflowClient,
    endpoint: Endpoint,
    read: _Read,
    start: int,
    end: int,
    counts: RequestCounts,
) -> None:
    """Fetch offsets [start, end), advancing by the records actually received."""
    offset = start
    while offset < end:
        page = await client.fetch_page(endpoint, offset, end - offset, counts)
        read.add(page)
        if not page.records:
            raise InconsistentRead(
                f"an empty page at offset {offset} although total_records is {read.total_records}"
            )
        offset += len(page.records)


async def _read_once(
    client: SynthflowClient, endpoint: Endpoint, counts: RequestCounts
) -> tuple[datetime, _Read]:
    taken_at = datetime.now(UTC)
    first = await client.fetch_page(endpoint, 0, client.fetch.page_size, counts)
    read = _Read(total_records=first.total_records)
    read.add(first)
    # The first page tells the real page size (the server may cap it silently); the rest
    # are fetched concurrently in spans of that size, each span filling its own gaps.
    step = len(first.records)
    if step == 0 or step >= first.total_records:
        return taken_at, read
    try:
        async with asyncio.TaskGroup() as group:
            for start in range(step, first.total_records, step):
                end = min(start + step, first.total_records)
                group.create_task(_read_span(client, endpoint, read, start, end, counts))
    except BaseExceptionGroup as failures:
        # An interruption (Ctrl-C) outranks a failure that retries could not fix, which
        # outranks a read that merely disagreed; each leaves the group unwrapped.
        ranked = sorted(
            failures.exceptions,
            key=lambda e: (isinstance(e, Exception), isinstance(e, InconsistentRead)),
        )
        raise ranked[0] from None
    return taken_at, read


async def read_listing(client: SynthflowClient, endpoint: Endpoint) -> Listing:
    """Read until one read is consistent, at most `fetch.listing_attempts` times."""
    started = time.perf_counter()
    counts = RequestCounts()
    problems: list[str] = []
    for attempt in range(1, client.fetch.listing_attempts + 1):
        try:
            taken_at, read = await _read_once(client, endpoint, counts)
            records = read.records()
        except InconsistentRead as problem:
            problems.append(str(problem))
            continue
        return Listing(
            workspace_id=endpoint.workspace_id,
            taken_at=taken_at,
            total_records=read.total_records,
            records=records,
            page_count=len(read.pages),
            counts=counts,
            attempts=attempt,
            seconds=time.perf_counter() - started,
        )
    raise IncompleteListingError(
        endpoint.workspace_id,
        f"the listing did not add up in {len(problems)} reads ({'; '.join(problems)}); "
        "nothing was stored",
        fix="Numbers were probably changing while we paged; the next run reads again",
    )
