"""A verified listing's numbers as a pandas frame: each in E.164 with its country.

The country is phonenumbers' `region_code_for_number`. A strict E.164 number is read as what it
is, a calling code and a national number, without `parse` (~20 us a number, three times the
rest); any other spelling goes through `parse`. A number the workspace's stored snapshot already
has keeps the country stored with it, so a number costs the library once. A number the library
cannot read is kept as the API gave it, with no country: a dropped number would read as removed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import pandas as pd
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumber, region_code_for_number

from pipelines.warehouse.checks import E164_PATTERN

E164 = re.compile(E164_PATTERN)  # ASCII digits only; with fullmatch, no trailing newline


def _region(number: PhoneNumber) -> str | None:
    region = region_code_for_number(number)
    return region if region and region != phonenumbers.UNKNOWN_REGION else None


def resolve(raw: str) -> tuple[str, str | None]:
    """The number in E.164 and its ISO 3166-1 region, as phonenumbers reads them."""
    if strict := E164.fullmatch(raw):
        digits = raw[1:]
        for length in (1, 2, 3):  # calling codes are prefix-free: at most one matches
            code = int(digits[:length])
            national = digits[length:]
            if code in COUNTRY_CODE_TO_REGION_CODE and national[:1] not in ("", "0"):
                return raw, _region(PhoneNumber(country_code=code, national_number=int(national)))
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return raw, None
    number = (
        raw if strict else phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    )
    return number, _region(parsed)


def listing_frame(numbers: pa.Table, known: Mapping[str, str | None]) -> pd.DataFrame:
    """`number`, `sid`, `is_available`, `country` of a read's numbers, in the order served;
    `known` maps numbers already stored to their country."""
    resolved = [
        (raw, known[raw]) if raw in known else resolve(raw) for raw in numbers["number"].to_pylist()
    ]
    return pa.table(
        {
            "number": pa.array([number for number, _ in resolved], pa.string()),
            "sid": numbers["sid"],
            "is_available": numbers["is_available"],
            "country": pa.array([country for _, country in resolved], pa.string()),
        }
    ).to_pandas(types_mapper=pd.ArrowDtype)


def not_e164(frame: pd.DataFrame) -> list[str]:
    """The numbers of a `listing_frame` that could not be written in E.164, as the API gave
    them: stored so, with no country, and reported by the run."""
    numbers = pa.array(frame["number"])
    return numbers.filter(pc.invert(pc.match_substring_regex(numbers, E164_PATTERN))).to_pylist()
