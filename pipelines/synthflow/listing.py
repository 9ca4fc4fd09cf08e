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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.synthflow.client import (
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
    numbers: pa.Table  # a row per number: RECORD_SCHEMA's columns and any `normalize` adds
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


# While later pages are still being read, the pages at the front of a listing are normalized
# (and handed to `read_listing`'s `leading`) whenever at least this many of their rows are in.
LEADING_CHUNK_ROWS = 10_000


@dataclass(frozen=True)
class LeadingRows:
    """Normalized rows from the front of one read, handed over while the rest is read.

    The chunks of a read come in order and without gaps: `start` is how many rows of the read
    came before these. If this read is the one returned, its listing's numbers begin with
    every chunk of it; a read that was abandoned shows as chunks of a later `attempt`.
    """

    attempt: int
    taken_at: datetime
    total_records: int
    start: int
    numbers: pa.Table


Leading = Callable[[LeadingRows], Awaitable[None]]


@dataclass
class _Read:
    """The pages of one attempt, checked as they arrive and kept as Arrow columns; the front of
    the listing is normalized in chunks while the rest is read."""

    attempt: int
    taken_at: datetime
    total_records: int
    normalize: Callable[[pa.Table], pa.Table]
    leading: Leading | None
    pages: dict[int, pa.RecordBatch] = field(default_factory=dict)  # by offset, not normalized
    page_count: int = 0
    normalized: list[pa.Table] = field(default_factory=list)  # the listing's front, in order
    normalized_rows: int = 0  # the offset where the pages still in `pages` begin
    front_end: int = 0  # the offset where the pages from the front stop without a gap
    chunking: bool = False  # a task is normalizing the front

    def add(self, page: Page) -> None:
        if page.total_records != self.total_records:
            raise InconsistentRead(
                f"total_records moved from {self.total_records} to {page.total_records} "
                f"while paging (page at offset {page.offset})"
            )
        self.pages[page.offset] = page.numbers
        self.page_count += 1
        while (numbers := self.pages.get(self.front_end)) is not None and numbers.num_rows:
            self.front_end += numbers.num_rows

    def chunk_front(self, group: asyncio.TaskGroup) -> None:
        """Start normalizing the front in `group` if a chunk of it is in and nobody is."""
        if not self.chunking and self._front() is not None:
            self.chunking = True
            group.create_task(self._normalize_front())

    def _front(self) -> list[int] | None:
        """The offsets of the pages from `normalized_rows` to `front_end`, when they hold at
        least LEADING_CHUNK_ROWS rows and do not reach the end (the end is normalized with the
        checks, once every page is in)."""
        if (
            self.front_end - self.normalized_rows < LEADING_CHUNK_ROWS
            or self.front_end >= self.total_records
        ):
            return None
        offsets, offset = [], self.normalized_rows
        while offset < self.front_end:
            offsets.append(offset)
            offset += self.pages[offset].num_rows
        return offsets

    async def _normalize_front(self) -> None:
        try:
            while (offsets := self._front()) is not None:
                pages = pa.Table.from_batches([self.pages.pop(offset) for offset in offsets])
                # In a thread: Arrow's kernels leave the event loop free for the other reads.
                numbers = await asyncio.to_thread(self.normalize, pages)
                start = self.normalized_rows
                self.normalized.append(numbers)
                self.normalized_rows += pages.num_rows
                if self.leading is not None:
                    await self.leading(
                        LeadingRows(self.attempt, self.taken_at, self.total_records, start, numbers)
                    )
        finally:
            self.chunking = False

    def numbers(self) -> pa.Table:
        """The read's numbers in offset order, normalized, once each and as many as
        total_records."""
        # The last page is never in a chunk, so some pages are always left here.
        rest = pa.Table.from_batches([self.pages[offset] for offset in sorted(self.pages)])
        table = pa.concat_tables([*self.normalized, self.normalize(rest)])
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
    group: asyncio.TaskGroup,
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
        read.chunk_front(group)
        offset += page.numbers.num_rows


async def _read_once(
    client: SynthflowClient,
    endpoint: Endpoint,
    counts: RequestCounts,
    attempt: int,
    normalize: Callable[[pa.Table], pa.Table],
    leading: Leading | None,
) -> _Read:
    taken_at = datetime.now(UTC)
    first = await client.fetch_page(endpoint, 0, client.fetch.page_size, counts)
    read = _Read(attempt, taken_at, first.total_records, normalize, leading)
    read.add(first)
    # The first page tells the real page size (the server may cap it silently); the rest
    # are fetched in spans of that size, each span filling its own gaps, by as many readers
    # as may be in flight. Each reader takes the next span when it is done with one, so what
    # a read costs grows with the pages that come back, never with the total a server claims.
    step = first.numbers.num_rows
    if step == 0 or step >= first.total_records:
        return read
    spans = iter(range(step, first.total_records, step))

    async def reader(group: asyncio.TaskGroup) -> None:
        for start in spans:
            end = min(start + step, first.total_records)
            await _read_span(client, endpoint, read, start, end, counts, group)

    readers = min(client.fetch.concurrency, len(range(step, first.total_records, step)))
    try:
        async with asyncio.TaskGroup() as group:
            read.chunk_front(group)
            for _ in range(readers):
                group.create_task(reader(group))
    except BaseExceptionGroup as failures:
        # An interruption (Ctrl-C) outranks a failure that retries could not fix, which
        # outranks a read that merely disagreed; each leaves the group unwrapped.
        ranked = sorted(
            failures.exceptions,
            key=lambda e: (isinstance(e, Exception), isinstance(e, InconsistentRead)),
        )
        raise ranked[0] from None
    return read


async def read_listing(
    client: SynthflowClient,
    endpoint: Endpoint,
    *,
    normalize: Callable[[pa.Table], pa.Table] = lambda numbers: numbers,
    leading: Leading | None = None,
) -> Listing:
    """Read until one read is consistent, at most `fetch.listing_attempts` times.

    `normalize` rewrites a read's numbers (RECORD_SCHEMA's columns, a run of whole pages at a
    time) before they are checked: it keeps those columns (numbers may be rewritten, say to
    E.164) and may add others, a row for a row. No number may appear twice in its `number`
    column. `leading`, if given, is awaited with each chunk of a read's front as it is
    normalized (`LeadingRows`), before the read is checked.
    """
    started = time.perf_counter()
    counts = RequestCounts()
    problems: list[str] = []
    for attempt in range(1, client.fetch.listing_attempts + 1):
        try:
            read = await _read_once(client, endpoint, counts, attempt, normalize, leading)
            # In a thread: Arrow's kernels leave the event loop free for the other reads.
            numbers = await asyncio.to_thread(read.numbers)
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
