"""The E.164 shortcut of pipelines/warehouse/normalize.py gives phonenumbers' own answer.

The reference is the library called the plain way, `parse` then `region_code_for_number`,
written here independently of the module. A phonenumbers release that changes how regions
are told apart makes these fail, rather than the shortcut quietly drifting from it.
"""

from __future__ import annotations

import phonenumbers
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberFormat, PhoneNumberType

from pipelines.warehouse.normalize import countries, e164_and_country

TYPES = [value for name, value in vars(PhoneNumberType).items() if name.isupper()]


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
    e164, regions = countries(EXAMPLES)
    assert list(zip(e164, regions, strict=True)) == [library(number) for number in EXAMPLES]


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
@given(st.one_of(after_a_calling_code(), example_neighbours()))
def test_any_strict_e164_number_gets_the_librarys_region(number: str) -> None:
    assert e164_and_country(number) == library(number)
    assert countries([number]) == ([library(number)[0]], [library(number)[1]])


@pytest.mark.parametrize(
    "raw",
    ["14155550123", "+1 415 555 0123", "+1-415-555-0123", "+14155550123\n", "+0123", "+44"],
)
def test_other_spellings_go_through_the_library(raw: str) -> None:
    assert e164_and_country(raw) == library(raw)
