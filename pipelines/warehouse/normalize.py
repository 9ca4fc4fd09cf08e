"""A verified listing as an Arrow table: the rows of `synthflow.number_snapshots`.

`listing_columns` writes a read's numbers in E.164 and adds their ISO 3166-1 region, as the
phonenumbers library gives it; `listing_table` adds the snapshot's columns (each stored once,
as a dictionary) and the rows are loaded into DuckDB by an Arrow scan. A number phonenumbers
cannot parse is kept as the API gave it (the E.164 check reports it); nothing is dropped, since
a dropped number would later read as `removed`.

The library costs ~20-30 us a number through `parse`, and a Python shortcut still ~2-4 us: the
largest CPU cost of reading a million numbers, spent on the event loop's thread while requests
wait. So the library's answer is reached a column at a time with Arrow compute, whose RE2
regexes run in C++ without the GIL (libphonenumber's C++ build runs the same metadata patterns
with RE2). A strict E.164 number has its calling code read off the front exactly as the library
does; a calling code of one region answers at once; a shared one (+1, +44, ...) tests its numbers
against the metadata patterns, in the order, that `region_code_for_number` uses. Anything else
(a national prefix that parsing would strip, a leading zero, no known calling code, non-ASCII
digits, any other spelling) goes through `phonenumbers.parse`, a number at a time.
`benchmarks/country_exactness.py` checks the two agree.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache, reduce

import numpy as np
import phonenumbers
import pyarrow as pa
import pyarrow.compute as pc
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneMetadata

from pipelines.warehouse.checks import E164_PATTERN

E164 = re.compile(r"\+[1-9]\d{1,14}")  # with fullmatch: no trailing newline let through
CALLING_CODES = frozenset(str(code) for code in COUNTRY_CODE_TO_REGION_CODE)
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


def _matches(strings: pa.StringArray, patterns: Sequence[str]) -> np.ndarray:
    """Which strings match every one of the RE2 patterns."""
    return reduce(
        pc.and_, (pc.match_substring_regex(strings, pattern) for pattern in patterns)
    ).to_numpy(zero_copy_only=False)


class _CallingCode:
    """What `parse` + `region_code_for_number` do for strict E.164 numbers of one calling code."""

    def __init__(self, calling_code: int) -> None:
        self.calling_code = calling_code
        self.start = 1 + len(str(calling_code))  # where the national number begins after "+"
        self.longest = 16 - self.start  # E.164: 15 digits at most
        regions = COUNTRY_CODE_TO_REGION_CODE[calling_code]
        self.shared = len(regions) > 1
        self.region = _known(regions[0])  # the answer when not shared
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(
            calling_code, phonenumbers.region_code_for_country_code(calling_code)
        )
        prefix = metadata.national_prefix_for_parsing if metadata is not None else None
        self.national_prefix = f"^(?:{prefix})" if prefix else None

    def parse_leaves_alone(self, national: pa.StringArray) -> np.ndarray:
        """Which national numbers (what follows "+" and the calling code) make a strict E.164
        number that `parse` keeps as it is: 2 to `longest` ASCII digits, no leading zero, no
        national prefix it would strip. The others (other Unicode digits too) go to `parse`."""
        length = pc.binary_length(national)
        kept = reduce(
            pc.and_,
            (
                pc.ascii_is_decimal(national),
                pc.greater_equal(length, 2),
                pc.less_equal(length, self.longest),
                pc.invert(pc.starts_with(national, "0")),
            ),
        )
        if self.national_prefix is not None:
            kept = pc.and_(
                kept, pc.invert(pc.match_substring_regex(national, self.national_prefix))
            )
        return kept.to_numpy(zero_copy_only=False)

    def regions(self, national: pa.StringArray) -> Iterator[tuple[np.ndarray, str | None]]:
        """`_region_code_for_number_from_list` over many national numbers: which of them (as
        positions) get which region, the first match winning; numbers not named get none."""
        if not self.shared:
            yield np.arange(len(national)), self.region
            return
        lengths = pc.binary_length(national).to_numpy()
        for length in np.unique(lengths):
            left = np.flatnonzero(lengths == length)
            for region, patterns in _region_tests(self.calling_code, int(length)):
                if len(left) == 0:
                    break
                hit = _matches(national.take(left), patterns)
                yield left[hit], region
                left = left[~hit]


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


@cache
def _region_tests(calling_code: int, length: int) -> tuple[tuple[str | None, tuple[str, ...]], ...]:
    """Per region of a shared calling code, in the library's order, the RE2 patterns a national
    number of this length must all match: its leading digits (at the start), or else the
    general pattern and one alternation of every type `_number_type_helper` accepts (each the
    whole number)."""
    tests = []
    for region in COUNTRY_CODE_TO_REGION_CODE[calling_code]:
        metadata = PhoneMetadata.metadata_for_region(region.upper(), None)
        if metadata is None:
            continue
        if metadata.leading_digits is not None:
            tests.append((_known(region), (f"^(?:{metadata.leading_digits})",)))
            continue
        general = _desc_pattern(metadata.general_desc, length)
        descs = [getattr(metadata, name) for name in _TYPE_DESCS]
        if not metadata.same_mobile_and_fixed_line_pattern:
            descs.append(metadata.mobile)
        types = [p for p in (_desc_pattern(d, length) for d in descs) if p is not None]
        if general is None or not types:
            continue  # the number type is UNKNOWN for every number of this length
        either = "|".join(f"(?:{pattern})" for pattern in types)
        tests.append((_known(region), (f"^(?:{general})$", f"^(?:{either})$")))
    return tuple(tests)


@cache
def _calling_code(digits: str) -> _CallingCode:
    """A known calling code (its metadata is read on first use, not at import)."""
    return _CallingCode(int(digits))


def _calling_code_after_plus(front: str) -> str | None:
    """The calling code `_extract_country_code` reads after a "+": the shortest known one."""
    if front.startswith("+"):
        for digits in (front[1:2], front[1:3], front[1:4]):
            if digits in CALLING_CODES:
                return digits
    return None


def _by_calling_code(numbers: pa.StringArray) -> Iterator[tuple[_CallingCode, np.ndarray]]:
    """The rows of numbers that begin with "+" and a known calling code, by calling code."""
    fronts = pc.dictionary_encode(pc.utf8_slice_codeunits(numbers, 0, 4))  # ~1,000 at most
    codes = [_calling_code_after_plus(front) for front in fronts.dictionary.to_pylist()]
    known = sorted({code for code in codes if code is not None})
    code_of_front = np.array(
        [-1 if code is None else known.index(code) for code in codes], np.int32
    )
    code_of_row = code_of_front[fronts.indices.to_numpy()]
    for position, digits in enumerate(known):
        yield _calling_code(digits), np.flatnonzero(code_of_row == position)


def _e164_and_regions(numbers: pa.StringArray) -> tuple[pa.StringArray, pa.StringArray]:
    """The numbers in E.164 and their regions, as `_parsed` gives them; `parse` runs only for
    the numbers the calling codes' tests leave to it."""
    regions: dict[str, int] = {}  # the regions met, by their place in the output's dictionary
    region_of_row = np.full(len(numbers), -1, np.int32)  # -1: no region
    to_parse = np.ones(len(numbers), bool)
    for code, rows in _by_calling_code(numbers):
        national = pc.utf8_slice_codeunits(numbers.take(rows), code.start)
        kept = code.parse_leaves_alone(national)
        rows, national = rows[kept], national.filter(kept)
        to_parse[rows] = False
        for positions, region in code.regions(national):
            if region is not None:
                region_of_row[rows[positions]] = regions.setdefault(region, len(regions))
    if to_parse.any():
        rows = np.flatnonzero(to_parse)
        parsed = [_parsed(raw) for raw in numbers.take(rows).to_pylist()]
        e164 = pa.array([number for number, _ in parsed], pa.string())
        numbers = pc.replace_with_mask(numbers, pa.array(to_parse), e164)
        region_of_row[rows] = [
            -1 if region is None else regions.setdefault(region, len(regions))
            for _, region in parsed
        ]
    names = pa.array(list(regions), pa.string())
    return numbers, names.take(pa.array(region_of_row, mask=region_of_row < 0))


def countries(numbers: Sequence[str]) -> list[tuple[str, str | None]]:
    """Each number in E.164 with its region, as `listing_columns` gives them."""
    e164, regions = _e164_and_regions(pa.array(numbers, pa.string()))
    return list(zip(e164.to_pylist(), regions.to_pylist(), strict=True))


def listing_columns(records: pa.Table) -> pa.Table:
    """A read's numbers (`number`, `sid`, `is_available`, in the order served) with each number
    in E.164 and its region added as `country`."""
    numbers, regions = _e164_and_regions(records["number"].combine_chunks())
    return pa.table(
        {
            "number": numbers,
            "sid": records["sid"],
            "is_available": records["is_available"],
            "country": regions,
        }
    )


def not_e164(numbers: pa.Table) -> list[str]:
    """The numbers of `listing_columns` that could not be written in E.164, as the API gave
    them: stored so, with no country, and reported by the run."""
    column = numbers["number"]
    return column.filter(pc.invert(pc.match_substring_regex(column, E164_PATTERN))).to_pylist()


def _constant(value: str, rows: int) -> pa.DictionaryArray:
    """The same string on every row, stored once."""
    return pa.DictionaryArray.from_arrays(
        pa.array(np.zeros(rows, dtype=np.int32)), pa.array([value], pa.string())
    )


def listing_table(
    numbers: pa.Table, *, snapshot_id: str, workspace_id: str, taken_at: datetime
) -> pa.Table:
    """The rows of `synthflow.number_snapshots` for a listing's `listing_columns`."""
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
