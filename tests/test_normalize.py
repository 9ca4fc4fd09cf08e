"""pipelines/normalize.py gives every number phonenumbers' own answer.

The reference is the library called the plain way, `parse` then `region_code_for_number`,
written here independently of the module. A strict E.164 number is read as written: where
`parse` would read it as another number (stripping what it takes for a national prefix), the
module keeps the number as written and gives that number's region. `listing_frame` keeps a
read's rows in their order, and a number already stored keeps its stored country.
"""

from __future__ import annotations

import duckdb
import phonenumbers
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from phonenumbers import COUNTRY_CODE_TO_REGION_CODE, PhoneNumberFormat, PhoneNumberType

from pipelines.normalize import listing_frame, resolve
from pipelines.synthflow.client import RECORD_SCHEMA
from pipelines.synthflow.simulator import demo_simulator
from tests.test_faults import snapshot

TYPES = [value for name, value in vars(PhoneNumberType).items() if name.isupper()]


def library(raw: str) -> tuple[str, str | None]:
    """What phonenumbers says, as the warehouse stores it."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return raw, None
    number = raw if raw.startswith("+") and raw[1:].isascii() and raw[1:].isdigit() else None
    number = number or phonenumbers.format_number(parsed, PhoneNumberFormat.E164)
    region = phonenumbers.region_code_for_number(parsed)
    return number, region if region and region != phonenumbers.UNKNOWN_REGION else None


def read_as_written(raw: str) -> bool:
    """Whether `parse` reads the strict E.164 number `raw` as the number written."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.format_number(parsed, PhoneNumberFormat.E164) == raw


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
    assert [resolve(number) for number in EXAMPLES] == [library(number) for number in EXAMPLES]


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
def test_any_strict_e164_number_read_as_written_gets_the_librarys_region(
    numbers: list[str],
) -> None:
    for number in numbers:
        assert resolve(number)[0] == number
        if read_as_written(number):
            assert resolve(number) == library(number)


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
    assert resolve(raw) == library(raw)


@pytest.mark.parametrize("raw", ["+390612345678", "+999123", "+12"])
def test_a_leading_zero_or_an_unknown_calling_code_goes_through_the_library(raw: str) -> None:
    assert resolve(raw) == library(raw)


@pytest.mark.parametrize(
    ("raw", "as_parsed", "as_written"),
    [
        ("+114138458451", "US", None),  # parse strips a national prefix 1: +1 413 845 8451
        ("+787900461146", "KZ", "RU"),  # parse strips a national prefix 8: +7 790 046 1146
    ],
)
def test_a_strict_number_is_read_as_written_not_as_parse_would_rewrite_it(
    raw: str, as_parsed: str, as_written: str | None
) -> None:
    assert not read_as_written(raw) and library(raw)[1] == as_parsed
    assert resolve(raw) == (raw, as_written)


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


def test_listing_frame_keeps_each_row_in_place_with_the_librarys_answer() -> None:
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

    frame = listing_frame(records(rows), known={})

    assert list(frame.columns) == ["number", "sid", "is_available", "country"]
    assert frame.astype(object).where(frame.notna(), None).to_dict("records") == [
        {
            "number": library(number)[0],
            "sid": sid,
            "is_available": available,
            "country": library(number)[1],
        }
        for number, sid, available in rows
    ]
    assert {library(number)[1] for number in numbers} >= {"US", "CA", "GB", "RU", "KZ", "BS"}


def test_a_number_already_stored_keeps_its_stored_country() -> None:
    rows = [("+14155550123", None, True), ("+442079460000", "PN1", False)]

    frame = listing_frame(records(rows), known={"+14155550123": "CA"})

    assert frame["country"].tolist() == ["CA", "GB"]


def test_an_empty_read_gives_an_empty_frame() -> None:
    frame = listing_frame(RECORD_SCHEMA.empty_table(), known={})

    assert len(frame) == 0
    assert list(frame.columns) == ["number", "sid", "is_available", "country"]


def test_a_run_reuses_the_countries_its_workspace_stored_and_resolves_only_new_numbers(
    tmp_path,
) -> None:
    """Read back from the warehouse, not recomputed: a stored country (here changed by hand)
    stays with its number in the next snapshot; a number new to the workspace is resolved."""
    db = tmp_path / "db.duckdb"
    with demo_simulator(seed=3, workspaces=1, numbers_per_workspace=30) as sim:
        (workspace_id,) = sim.workspace_ids()
        assert all(outcome.succeeded for outcome in snapshot(sim, db, "run-1"))
        with duckdb.connect(str(db)) as con:
            con.execute("UPDATE synthflow.number_snapshots SET country = 'AQ'")
        new = sim.new_number("DE")
        sim.add_number(workspace_id, new)

        assert all(outcome.succeeded for outcome in snapshot(sim, db, "run-2"))

    with duckdb.connect(str(db), read_only=True) as con:
        countries = dict(
            con.execute(
                "SELECT number, country FROM synthflow.number_snapshots WHERE snapshot_id = ?",
                [f"{workspace_id}/run-2"],
            ).fetchall()
        )
    assert countries.pop(new.number) == "DE"
    assert set(countries.values()) == {"AQ"} and len(countries) == 30
