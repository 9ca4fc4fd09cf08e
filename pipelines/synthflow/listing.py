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

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.synthflow.client import (
    RECORD_SCHEMA,
    Endpoint,
    Page,
    Record,
    RequestCounts,
    SynthflowClient,
    as_records,
)
from pipelines.synthflow.errors import IncompleteListingError


@dataclass
class Listing:
    """One consistent read: every number once, in the order the API gave them."""

    workspace_id: str
    taken_at: datetime
    total_records: int
    numbers: pa.Table  # RECORD_SCHEMA, a row per number
    page_count: int
    counts: RequestCounts
    attempts: int
    seconds: float = 0.0

    @property
    def records(self) -> list[Record]:
        """The numbers as (number, sid, is_available) tuples, for reading and comparing."""
        return as_records(self.numbers)

    @property
    def available(self) -> int:
        return pc.sum(self.numbers["is_available"]).as_py() or 0


class InconsistentRead(Exception):
    """This read disagreed with itself; the reason says how."""


@dataclass
class _Read:
    """The pages of one attempt, checked as they arrive and kept as Arrow columns."""

    taken_at: datetime
    total_records: int
    pages: dict[int, pa.RecordBatch] = field(default_factory=dict)  # by offset
    page_count: int = 0

    def add(self, page: Page) -> None:
        if page.total_records != self.total_records:
            raise InconsistentRead(
                f"total_records moved from {self.total_records} to {page.total_records} "
                f"while paging (page at offset {page.offset})"
            )
        self.pages[page.offset] = page.numbers
        self.page_count += 1

    def numbers(self) -> pa.Table:
        """The read's numbers in offset order, verified: once each and as many as
        total_records."""
        table = pa.Table.from_batches(
            [self.pages[offset] for offset in sorted(self.pages)], schema=RECORD_SCHEMA
        )
        distinct = pc.count_distinct(table["number"]).as_py()
        if distinct != table.num_rows:
            raise InconsistentRead(f"{table.num_rows - distinct} number(s) came twice across pages")
        if distinct != self.total_records:
            raise InconsistentRead(
                f"collected {distinct} distinct numbers but total_records is {self.total_records}"
            )
        return table


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
        if not page.numbers.num_rows:
            raise InconsistentRead(
                f"an empty page at offset {offset} although total_records is {read.total_records}"
            )
        offset += page.numbers.num_rows


async def _read_once(
    client: SynthflowClient,
    endpoint: Endpoint,
    counts: RequestCounts,
) -> _Read:
    taken_at = datetime.now(UTC)
    first = await client.fetch_page(endpoint, 0, client.fetch.page_size, counts)
    read = _Read(taken_at, first.total_records)
    read.add(first)
    # The first page tells the real page size (the server may cap it silently); the rest
    # are fetched in spans of that size, each span filling its own gaps, by as many readers
    # as may be in flight. Each reader takes the next span when it is done with one, so what
    # a read costs grows with the pages that come back, never with the total a server claims.
    step = first.numbers.num_rows
    if step == 0 or step >= first.total_records:
        return read
    spans = iter(range(step, first.total_records, step))

    async def reader() -> None:
        for start in spans:
            end = min(start + step, first.total_records)
            await _read_span(client, endpoint, read, start, end, counts)

    readers = min(client.fetch.concurrency, len(range(step, first.total_records, step)))
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(readers):
                group.create_task(reader())
    except BaseExceptionGroup as failures:
        # An interruption (Ctrl-C) outranks a failure that retries could not fix, which
        # outranks a read that merely disagreed; each leaves the group unwrapped.
        ranked = sorted(
            failures.exceptions,
            key=lambda e: (isinstance(e, Exception), isinstance(e, InconsistentRead)),
        )
        raise ranked[0] from None
    return read


async def read_listing(client: SynthflowClient, endpoint: Endpoint) -> Listing:
    """Read until one read is consistent, at most `fetch.listing_attempts` times."""
    started = time.perf_counter()
    counts = RequestCounts()
    problems: list[str] = []
    for attempt in range(1, client.fetch.listing_attempts + 1):
        try:
            read = await _read_once(client, endpoint, counts)
            numbers = read.numbers()
        except InconsistentRead as problem:
            problems.append(str(problem))
            continue
        return Listing(
            workspace_id=endpoint.workspace_id,
            taken_at=read.taken_at,
            total_records=read.total_records,
            numbers=numbers,
            page_count=read.page_count,
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
