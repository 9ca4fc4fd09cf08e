"""A workspace's whole listing, read consistently or not at all (shared/design.md).

The API has no snapshot isolation, so a read counts only when every page gave the same
`total_records`, no number came twice and the distinct numbers equal that total."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.synthflow.client import Endpoint, Record, RequestCounts, SynthflowClient, as_records
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
    attempts: int = 1
    seconds: float = 0.0

    @property
    def records(self) -> list[Record]:
        return as_records(self.numbers)

    @property
    def available(self) -> int:
        return pc.sum(self.numbers["is_available"]).as_py() or 0


class InconsistentRead(Exception):
    """This read disagreed with itself; the reason says how."""


async def _read_once(client: SynthflowClient, endpoint: Endpoint, counts: RequestCounts) -> Listing:
    """One read, verified: its numbers in offset order."""
    taken_at, rank = datetime.now(UTC), time.monotonic()  # the listing begun first goes first
    first = await client.fetch_page(endpoint, 0, client.fetch.page_size, counts, rank)
    pages = [first]
    total = first.total_records
    step = first.numbers.num_rows  # the real page size: a server may cap it silently
    # Spans of a page each, taken one after another by as many readers as may be in flight:
    # what a read costs grows with the pages that come back, never with the total claimed.
    spans = range(step, total, step) if step else range(0)
    starts = iter(spans)

    async def reader() -> None:
        for offset in starts:
            end = min(offset + step, total)
            while offset < end:  # a short page leaves a gap in its span: read on from there
                page = await client.fetch_page(endpoint, offset, end - offset, counts, rank)
                if page.total_records != total:
                    raise InconsistentRead(
                        f"total_records moved from {total} to {page.total_records} "
                        f"while paging (page at offset {offset})"
                    )
                if not page.numbers.num_rows:
                    raise InconsistentRead(
                        f"an empty page at offset {offset} although total_records is {total}"
                    )
                pages.append(page)
                offset += page.numbers.num_rows

    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(min(client.fetch.concurrency, len(spans))):
                group.create_task(reader())
    except BaseExceptionGroup as failures:
        # An interruption (Ctrl-C) outranks a failure that retries could not fix, which
        # outranks a read that merely disagreed; the first is raised alone.
        raise min(
            failures.exceptions,
            key=lambda e: (isinstance(e, Exception), isinstance(e, InconsistentRead)),
        ) from None
    pages.sort(key=lambda page: page.offset)
    numbers = pa.Table.from_batches([page.numbers for page in pages])
    distinct = pc.count_distinct(numbers["number"]).as_py()
    if distinct != numbers.num_rows:
        raise InconsistentRead(f"{numbers.num_rows - distinct} number(s) came twice across pages")
    if distinct != total:
        raise InconsistentRead(
            f"collected {distinct} distinct numbers but total_records is {total}"
        )
    return Listing(endpoint.workspace_id, taken_at, total, numbers, len(pages), counts)


async def read_listing(client: SynthflowClient, endpoint: Endpoint) -> Listing:
    """Read until one read is consistent, at most `fetch.listing_attempts` times."""
    started = time.perf_counter()
    counts = RequestCounts()
    problems: list[str] = []
    for attempt in range(1, client.fetch.listing_attempts + 1):
        try:
            listing = await _read_once(client, endpoint, counts)
        except InconsistentRead as problem:
            problems.append(str(problem))
            continue
        listing.attempts = attempt
        listing.seconds = time.perf_counter() - started
        return listing
    raise IncompleteListingError(
        endpoint.workspace_id,
        f"the listing did not add up in {len(problems)} reads ({'; '.join(problems)}); "
        "nothing was stored",
        fix="Numbers were probably changing while we paged; the next run reads again",
    )
