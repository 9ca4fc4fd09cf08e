"""pipelines/warehouse/normalize.py gives every number phonenumbers' own answer, a column at a time.

The reference is the library called the plain way, `parse` then `region_code_for_number`,
written here independently of the module. A phonenumbers release that changes how regions
are told apart makes these fail, rather than the Arrow columns quietly drifting from it.
`listing_columns` keeps a read's rows, in their order, and adds each number's region.
"""

from __future__ import annotations

import phonenumbers
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberFormat, PhoneNumberType

from pipelines.synthflow.client import RECORD_SCHEMA
from pipelines.warehouse.normalize import countries, listing_columns

TYPES = [value for name, value in vars(PhoneNumberType).items() if name.isupper()]
LISTING_SCHEMA = pa.schema(
    [
        ("number", pa.string()),
        ("sid", pa.string()),
        ("is_available", pa.bool_()),
        ("country", pa.string()),
    ]
)


def library(raw: str) -> tuple[str, str | None]:
    """What phonenumbers says, as the warehouse stores it."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return raw, None
    number = raw if raw.startswith("+") and raw[1:].isdigit() else None
    number = number or phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
    region = phonenumbers.region_code_for_number(parsed)
    return number, region if region and region != phonenumbers.UNKNOWN_REGION else None


def example_numbers() -> list[str]:
    """Every region's example number of every type, in E.164."""
    numbers = []
    for region in sorted(phonenumbers.SUPPORTED_REGIONS):
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                numbers.append(phonenumbers.format_number(example, PhoneNumberFormat.E164))
    return numbers


EXAMPLES = example_numbers()


def test_every_example_number_of_every_region_and_type() -> None:
    assert len(EXAMPLES) > 1000
    assert countries(EXAMPLES) == [library(number) for number in EXAMPLES]


calling_codes = st.sampled_from(sorted(COUNTRY_CODE_TO_REGION_CODE))


@st.composite
def after_a_calling_code(draw: st.DrawFn) -> str:
    code = str(draw(calling_codes))
    digits = draw(st.text("0123456789", min_size=1, max_size=15 - len(code)))
    return f"+{code}{digits}"


@st.composite
def example_neighbours(draw: st.DrawFn) -> str:
    """An example number with its last digits changed: valid and invalid ones alike."""
    example = draw(st.sampled_from(EXAMPLES))
    changed = draw(st.integers(1, min(6, len(example) - 3)))
    tail = draw(st.text("0123456789", min_size=changed, max_size=changed))
    return example[:-changed] + tail


@settings(max_examples=400, deadline=None)
@given(st.lists(st.one_of(after_a_calling_code(), example_neighbours()), min_size=1, max_size=8))
def test_any_strict_e164_numbers_get_the_librarys_regions(numbers: list[str]) -> None:
    assert countries(numbers) == [library(number) for number in numbers]


ODD_SPELLINGS = [
    "14155550123",
    "+1 415 555 0123",
    "+1-415-555-0123",
    "+14155550123\n",
    "+0123",
    "+44",
    "+12",
    "+1\u0664\u0661\u06655550123",  # Arabic-Indic 415: Python's \d takes them, parse reads them
    "+44\u0662\u066079460000",
    "+1\uff14\uff11\uff155550123",  # fullwidth 415
    "+491512345678901234567",  # 21 digits: longer than parse accepts
]


@pytest.mark.parametrize("raw", ODD_SPELLINGS)
def test_other_spellings_go_through_the_library(raw: str) -> None:
    assert countries([raw]) == [library(raw)]


LEFT_TO_PARSE = [
    "+114138458451",  # parse strips the national prefix 1: US
    "+787900461146",  # parse strips the national prefix 8: KZ, not RU
    "+390612345678",  # a leading zero, kept by parse
    "+999123",  # no known calling code
]


@pytest.mark.parametrize("raw", LEFT_TO_PARSE)
def test_strict_numbers_the_metadata_tests_do_not_cover_go_through_the_library(raw: str) -> None:
    assert countries([raw]) == [library(raw)]


def records(rows: list[tuple[str, str | None, bool]]) -> pa.Table:
    """A read as the client gives it, in two chunks as pages arrive."""
    half = len(rows) // 2
    return pa.Table.from_batches(
        [
            pa.RecordBatch.from_pylist(
                [dict(zip(RECORD_SCHEMA.names, row, strict=True)) for row in part],
                schema=RECORD_SCHEMA,
            )
            for part in (rows[:half], rows[half:])
        ]
    )


def test_listing_columns_keep_each_row_in_place_with_the_librarys_answer() -> None:
    numbers = [
        "+14155550123",  # +1, shared: US
        "+447911123456",  # +44, shared: GB
        "+16045550123",  # +1: CA
        "+1 604 555 0123",  # odd spelling
        "+4930123456",  # +49, one region
        "+1\u0664\u0661\u06655550123",  # Arabic-Indic 415
        "+74951234567",  # +7, shared: RU
        "+77172345678",  # +7: KZ
        "+442079460000",
        "+12425550123",  # +1: BS, by leading digits
        "+999123",  # no known calling code
        "+8613812345678",  # +86, one region
    ]
    rows = [(number, None if i % 3 else f"PN{i}", i % 2 == 0) for i, number in enumerate(numbers)]

    table = listing_columns(records(rows))

    assert table.schema == LISTING_SCHEMA
    assert table.to_pylist() == [
        {
            "number": library(number)[0],
            "sid": sid,
            "is_available": available,
            "country": library(number)[1],
        }
        for number, sid, available in rows
    ]
    assert {library(number)[1] for number in numbers} >= {"US", "CA", "GB", "RU", "KZ", "BS"}


def test_an_empty_read_gives_an_empty_listing() -> None:
    table = listing_columns(RECORD_SCHEMA.empty_table())

    assert table.num_rows == 0
    assert table.schema == LISTING_SCHEMA
