"""A verified listing as an Arrow table: the rows of `synthflow.number_snapshots`.

Each page becomes Arrow columns as it arrives (`page_columns`, while other pages are still on
their way); `listing_table` adds the snapshot's columns (each stored once, as a dictionary)
and the rows are loaded into DuckDB by an Arrow scan.

Numbers are written in E.164 and given their ISO 3166-1 region by the phonenumbers library.
A number phonenumbers cannot parse is kept as the API gave it (the E.164 check reports it);
nothing is dropped, since a dropped number would later read as `removed`.

`phonenumbers.parse` costs ~20-30 us a number, which is most of a large snapshot's time. A
number the API already gives in strict E.164 takes a shortcut that reaches the library's own
answer without `parse`: the calling code is read off the front exactly as the library does;
a calling code shared by one region answers at once; a shared one (+1, +44, ...) tests the
number against the same metadata patterns, in the same order, that
`region_code_for_number` uses. Anything the shortcut does not cover (a national prefix that
parsing would strip, a leading zero, no known calling code, any other spelling) goes through
`phonenumbers.parse` itself. `benchmarks/country_exactness.py` checks the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

import numpy as np
import phonenumbers
import pyarrow as pa
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from pipelines.synthflow.client import Record

E164 = re.compile(r"\+[1-9]\d{1,14}")  # with fullmatch: no trailing newline let through
_NOT_SHORTCUT = object()
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _parsed(raw: str) -> tuple[str, str | None]:
    """The library's answer, through `phonenumbers.parse`."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return raw, None
    number = (
        raw
        if E164.fullmatch(raw)
        else phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    )
    return number, _known(phonenumbers.region_code_for_number(parsed))


def _known(region: str | None) -> str | None:
    return region if region and region != phonenumbers.UNKNOWN_REGION else None


class _CallingCode:
    """What `parse` + `region_code_for_number` do for numbers of one calling code."""

    def __init__(self, calling_code: int) -> None:
        self.calling_code = calling_code
        self.start = 1 + len(str(calling_code))  # where the national number begins after "+"
        regions = COUNTRY_CODE_TO_REGION_CODE[calling_code]
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(
            calling_code, phonenumbers.region_code_for_country_code(calling_code)
        )
        prefix = metadata.national_prefix_for_parsing if metadata is not None else None
        # parse() may strip a national prefix from what follows the calling code; such
        # numbers are left to parse().
        self.national_prefix = re.compile(prefix).match if prefix else None
        self.region = _known(regions[0]) if len(regions) == 1 else _NOT_SHORTCUT
        self._tests: dict[int, tuple] = {}

    def region_for(self, national: str) -> str | None:
        """`_region_code_for_number_from_list`: the first region whose leading digits match
        the number, or (without leading digits) whose number type is not UNKNOWN."""
        tests = self._tests.get(len(national))
        if tests is None:
            tests = self._tests[len(national)] = _region_tests(self.calling_code, len(national))
        for region, leading, general, types in tests:
            if leading is not None:
                if leading(national):
                    return region
            elif general(national) and types(national):
                return region
        return None


_TYPE_DESCS = (
    "premium_rate",
    "toll_free",
    "shared_cost",
    "voip",
    "personal_number",
    "pager",
    "uan",
    "voicemail",
    "fixed_line",
)


def _desc_pattern(desc, length: int) -> str | None:
    """`_is_number_matching_desc` for numbers of this length, as one pattern (None: never)."""
    if desc is None:
        return None
    if len(desc.possible_length) > 0 and length not in desc.possible_length:
        return None
    return desc.national_number_pattern or None


def _region_tests(calling_code: int, length: int) -> tuple:
    """Per region of a shared calling code, in the library's order: its leading-digits match,
    or the general pattern's and one alternation of every type `_number_type_helper` accepts
    (each a fullmatch)."""
    tests = []
    for region in COUNTRY_CODE_TO_REGION_CODE[calling_code]:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            tests.append((_known(region), re.compile(metadata.leading_digits).match, None, None))
            continue
        general = _desc_pattern(metadata.general_desc, length)
        descs = [getattr(metadata, name) for name in _TYPE_DESCS]
        if not metadata.same_mobile_and_fixed_line_pattern:
            descs.append(metadata.mobile)
        types = [p for p in (_desc_pattern(d, length) for d in descs) if p is not None]
        if general is None or not types:
            continue  # the number type is UNKNOWN for every number of this length
        either = "|".join(f"(?:{pattern})" for pattern in types)
        tests.append(
            (_known(region), None, re.compile(general).fullmatch, re.compile(either).fullmatch)
        )
    return tuple(tests)


@cache
def _calling_code(digits: str) -> _CallingCode | None:
    """The calling code these digits spell, if the library knows it (its metadata is read on
    first use, not at import)."""
    code = int(digits)
    return _CallingCode(code) if code in COUNTRY_CODE_TO_REGION_CODE else None


def _shortcut(raw: str):
    """The region of a strict E.164 number, or _NOT_SHORTCUT when parse() must decide."""
    if len(raw) <= 3:  # parse(): too short after the "+"
        return _NOT_SHORTCUT
    # _extract_country_code: the shortest known calling code at the front wins
    code = _calling_code(raw[1:2]) or _calling_code(raw[1:3]) or _calling_code(raw[1:4])
    if code is None:
        return _NOT_SHORTCUT
    national = raw[code.start :]
    if len(national) < 2 or national[0] == "0":
        return _NOT_SHORTCUT
    if code.national_prefix is not None and code.national_prefix(national):
        return _NOT_SHORTCUT
    if code.region is not _NOT_SHORTCUT:
        return code.region
    return code.region_for(national)


def e164_and_country(raw: str) -> tuple[str, str | None]:
    """The number in E.164 and its region code (None when phonenumbers cannot tell)."""
    if E164.fullmatch(raw):
        region = _shortcut(raw)
        if region is not _NOT_SHORTCUT:
            return raw, region
    return _parsed(raw)


def countries(numbers: Sequence[str]) -> tuple[list[str], list[str | None]]:
    """`e164_and_country` over many numbers: the numbers in E.164 and their regions."""
    pairs = [e164_and_country(raw) for raw in numbers]
    return [number for number, _ in pairs], [region for _, region in pairs]


def _constant(value: str, rows: int) -> pa.DictionaryArray:
    """The same string on every row, stored once."""
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(rows, dtype=np.int32)), pa.array([value], pa.string())
    )


def page_columns(records: list[Record]) -> pa.RecordBatch:
    """A page's numbers in E.164 with their sid, availability and region."""
    e164, regions = countries([number for number, _, _ in records])
    return pa.RecordBatch.from_arrays(
        [
            pa.array(e164, pa.string()),
            pa.array([sid for _, sid, _ in records], pa.string()),
            pa.array([available for _, _, available in records], pa.bool_()),
            pa.array(regions, pa.string()),
        ],
        names=["number", "sid", "is_available", "country"],
    )


def listing_table(
    numbers: pa.Table, *, snapshot_id: str, workspace_id: str, taken_at: datetime
) -> pa.Table:
    """The rows of `synthflow.number_snapshots` for a listing's `page_columns`."""
    numbers = numbers.combine_chunks()  # DuckDB scans one long chunk ~3x faster than many pages
    rows = numbers.num_rows
    if taken_at.tzinfo is None:
        taken_at = taken_at.replace(tzinfo=UTC)  # the warehouse's times are UTC
    micros = (taken_at - EPOCH) // timedelta(microseconds=1)
    return pa.table(
        {
            "snapshot_id": _constant(snapshot_id, rows),
            "workspace_id": _constant(workspace_id, rows),
            "taken_at": pa.array(np.full(rows, micros, dtype=np.int64)).cast(
                pa.timestamp("us", tz="UTC")
            ),
            **{name: numbers[name] for name in ("number", "sid", "is_available", "country")},
        }
    )
