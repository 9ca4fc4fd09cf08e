"""The shape of a `GET /v2/numbers` page, validated strictly where it matters.

Unknown extra fields are ignored (the API may add some; pydantic's default for typed dicts);
a missing field or a wrong type makes the page malformed, which the client treats like a
failed request. The shapes are typed dicts rather than models: pydantic validates them the
same way, and a page of a thousand records comes out as plain dicts in less than half the
time that building model objects takes.
"""

from __future__ import annotations

from typing import Annotated, NotRequired

from pydantic import Field, StrictBool, StrictInt, StrictStr, TypeAdapter
from typing_extensions import TypedDict


class NumberRecord(TypedDict):
    number: Annotated[StrictStr, Field(min_length=1)]
    sid: StrictStr | None  # present, null for custom (SIP) numbers
    is_available: StrictBool


class Pagination(TypedDict):
    total_records: Annotated[StrictInt, Field(ge=0)]
    limit: NotRequired[StrictInt | None]
    offset: NotRequired[StrictInt | None]


class PageBody(TypedDict):
    pagination: Pagination
    phone_numbers: list[NumberRecord]


class NumbersPage(TypedDict):
    """The whole 200 answer: `{"status": "ok", "response": {...}}`."""

    status: NotRequired[StrictStr | None]
    response: PageBody


NUMBERS_PAGE = TypeAdapter(NumbersPage)
