"""The shape of a `GET /v2/numbers` page, validated strictly where it matters.

Unknown extra fields are ignored (the API may add some); a missing field or a wrong type
makes the page malformed, which the client treats like a failed request.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class NumberRecord(_Lenient):
    number: Annotated[StrictStr, Field(min_length=1)]
    sid: StrictStr | None  # present, null for custom (SIP) numbers
    is_available: StrictBool


class Pagination(_Lenient):
    total_records: Annotated[StrictInt, Field(ge=0)]
    limit: StrictInt | None = None
    offset: StrictInt | None = None


class PageBody(_Lenient):
    pagination: Pagination
    phone_numbers: list[NumberRecord]


class NumbersPage(_Lenient):
    """The whole 200 answer: `{"status": "ok", "response": {...}}`."""

    status: StrictStr | None = None
    response: PageBody
