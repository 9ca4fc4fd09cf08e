"""The simulator's workspaces: seeded listings, their mutations, and how a page is cut.

Decides what each workspace lists and in which order, that a number is listed by at most one
workspace, what a page of a listing is, and how a listing shifts by itself while a client
pages (churn, a repeated record). Not thread-safe: the Simulator calls it with its lock held.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from itertools import islice
from typing import Any

from pipelines.synthflow.simulator.numbers import NumberFactory, PhoneNumber, make_sid


class Listing:
    """One workspace's numbers in API order: an insertion-ordered dict plus cached views.

    The views (all, available, assigned) are rebuilt on the first page after a change, so a
    page costs O(page size) however large the workspace.
    """

    def __init__(
        self, records: Sequence[PhoneNumber], countries: Sequence[str], share: float
    ) -> None:
        self.by_number = {record.number: record for record in records}
        self.countries = tuple(countries)
        self.available_share = share  # for the numbers churn adds
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

    def put(self, record: PhoneNumber) -> None:
        self.by_number[record.number] = record  # an existing key keeps its place in the order
        self._views.clear()

    def pop(self, number: str) -> PhoneNumber:
        record = self.by_number.pop(number)
        self._views.clear()
        return record

    def clear(self) -> None:
        self.by_number = {}
        self._views.clear()

    def prepend(self, records: Sequence[PhoneNumber]) -> None:
        fresh = {record.number: record for record in records}
        fresh.update(self.by_number)
        self.by_number = fresh
        self._views.clear()


class Workspaces:
    """Every workspace's listing, and which workspace lists each number."""

    def __init__(self, seed: int) -> None:
        self._factory = NumberFactory(seed)
        self._listings: dict[str, Listing] = {}
        self._owner: dict[str, str] = {}  # number -> workspace that lists it

    def __contains__(self, workspace_id: object) -> bool:
        return workspace_id in self._listings

    def ids(self) -> list[str]:
        return list(self._listings)

    def get(self, workspace_id: str) -> Listing:
        try:
            return self._listings[workspace_id]
        except KeyError:
            raise KeyError(f"no workspace {workspace_id!r} in the simulator") from None

    def add(
        self,
        workspace_id: str,
        count: int,
        countries: Sequence[str],
        available_share: float,
        custom_share: float,
    ) -> list[PhoneNumber]:
        if workspace_id in self._listings:
            raise ValueError(f"workspace {workspace_id} already exists")
        records = self._factory.records(count, countries, available_share, custom_share)
        self._listings[workspace_id] = Listing(records, countries, available_share)
        self._owner.update(dict.fromkeys((p.number for p in records), workspace_id))
        return records

    def new_number(self, country: str, *, sid: bool, is_available: bool) -> PhoneNumber:
        number = self._factory.fresh_number(country)
        return PhoneNumber(number, make_sid(self._factory.rng) if sid else None, is_available)

    def add_number(self, workspace_id: str, record: PhoneNumber) -> None:
        listing = self.get(workspace_id)
        owner = self._owner.get(record.number)
        if owner is not None:
            raise ValueError(
                f"{record.number} is already in workspace {owner}; use move_number() "
                "or remove_number() first"
            )
        self._factory.reserve(record.number)
        listing.put(record)
        self._owner[record.number] = workspace_id

    def remove_number(self, workspace_id: str, number: str) -> PhoneNumber:
        self._record(workspace_id, number)
        del self._owner[number]
        return self._listings[workspace_id].pop(number)

    def update(self, workspace_id: str, number: str, **changes: Any) -> None:
        """Change fields of a record in place; it keeps its position in the order."""
        record = self._record(workspace_id, number)
        self._listings[workspace_id].put(replace(record, **changes))

    def move_number(self, number: str, from_workspace: str, to_workspace: str) -> None:
        target = self.get(to_workspace)
        target.put(self.remove_number(from_workspace, number))
        self._owner[number] = to_workspace

    def clear(self, workspace_id: str) -> None:
        listing = self.get(workspace_id)
        for number in listing.by_number:
            del self._owner[number]
        listing.clear()

    def churn_while_paging(
        self, workspace_id: str, pages: int | None, add: int, remove: int
    ) -> None:
        listing = self.get(workspace_id)
        listing.churn_pages = pages
        listing.churn_add = add
        listing.churn_remove = remove
        listing.churn_events = 0

    def duplicate_across_pages(self, workspace_id: str, count: int) -> None:
        self.get(workspace_id).duplicate_pages += count

    def page(
        self,
        workspace_id: str,
        limit: int,
        offset: int,
        is_available: bool | None,
        *,
        well_formed: bool,
    ) -> tuple[int, list[PhoneNumber]]:
        """The listing's total after the filter and the page's records.

        Only a well-formed page (one a client may count) takes a switched-on repeat and, with
        offset > 0, moves churn on a step, after the page is cut.
        """
        listing = self.get(workspace_id)
        records = listing.view(is_available)
        total = len(records)
        start = offset
        if well_formed and listing.duplicate_pages and 0 < offset < total:
            listing.duplicate_pages -= 1
            start = offset - 1  # the previous page's last record comes again
        page = records[start : start + limit]
        if well_formed and offset > 0:
            self._churn(workspace_id, listing)
        return total, page

    def _churn(self, workspace_id: str, listing: Listing) -> None:
        if listing.churn_pages == 0:
            return
        if listing.churn_pages is not None:
            listing.churn_pages -= 1
        steps = [step for step in ("add", "remove") if getattr(listing, f"churn_{step}") > 0]
        if not steps:
            return
        step = steps[listing.churn_events % len(steps)]
        listing.churn_events += 1
        if step == "add":
            rng = self._factory.rng
            fresh = [
                PhoneNumber(
                    self._factory.fresh_number(rng.choice(listing.countries)),
                    make_sid(rng),
                    rng.random() < listing.available_share,
                )
                for _ in range(listing.churn_add)
            ]
            listing.prepend(fresh)
            self._owner.update(dict.fromkeys((p.number for p in fresh), workspace_id))
        else:
            for number in list(islice(listing.by_number, listing.churn_remove)):
                self.remove_number(workspace_id, number)

    def _record(self, workspace_id: str, number: str) -> PhoneNumber:
        try:
            return self.get(workspace_id).by_number[number]
        except KeyError:
            raise KeyError(f"{number} is not in workspace {workspace_id}") from None
