"""The shape of a `GET /v2/numbers` page, validated strictly where it matters.

Unknown extra fields are ignored (the API may add some; pydantic's default for typed dicts);
a missing `number` or `is_available`, a wrong type, or a `status` other than "ok" makes the page
malformed, which the client treats like a failed request. The API marks no field required:
a record without `sid` has none (NULL), as a custom number does. The shapes are typed dicts
rather than models: pydantic validates them the same way, and a page of a thousand records
comes out as plain dicts in less than half the time that building model objects takes.
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
    limit: NotRequired[StrictInt | None]
    offset: NotRequired[StrictInt | None]


class PageBody(TypedDict):
    pagination: Pagination
    phone_numbers: list[NumberRecord]


class NumbersPage(TypedDict):
    """The whole 200 answer: `{"status": "ok", "response": {...}}`."""

    status: NotRequired[Literal["ok"]]  # a 200 saying "error" is no listing
    response: PageBody


NUMBERS_PAGE = TypeAdapter(NumbersPage)
