"""Do the Arrow columns of `pipelines/warehouse/normalize.py` give phonenumbers' own answer?

Compares `countries` (the code `listing_columns` runs) with `phonenumbers.parse` +
`region_code_for_number` (the reference, `normalize._parsed`) on:
  - every region's example numbers of every type, and each with its last digits varied;
  - random digit strings after every calling code, of every length E.164 allows;
  - such strings that begin with the calling code's national prefix, which parse may strip;
  - random strict E.164 strings (any calling code, known or not);
  - the simulator's generated numbers (what the benchmark stores);
  - odd spellings (spaces, dashes, no plus, a trailing newline, non-ASCII digits) that must
    go through `parse`.
Prints the counts and how much faster the columns are; exits 1 on any disagreement.

Run: .venv/bin/python benchmarks/country_exactness.py [--samples N] [--seed S]
"""

from __future__ import annotations

import argparse
import random
import re
import sys
import time
from pathlib import Path

import phonenumbers
from phonenumbers import (
    COUNTRY_CODE_TO_REGION_CODE,
    PhoneMetadata,
    PhoneNumberFormat,
    PhoneNumberType,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pipelines.synthflow.simulator.numbers import NumberFactory
from pipelines.warehouse.normalize import _parsed, countries

TYPES = [value for name, value in vars(PhoneNumberType).items() if name.isupper()]
ARABIC_INDIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")


def examples(rng: random.Random) -> list[str]:
    numbers = []
    regions = list(phonenumbers.SUPPORTED_REGIONS)
    for region in regions:
        for kind in TYPES:
            example = phonenumbers.example_number_for_type(region, kind)
            if example is None:
                continue
            e164 = phonenumbers.format_number(example, PhoneNumberFormat.E164)
            numbers.append(e164)
            for _ in range(30):  # neighbours: the last 1-6 digits varied
                keep = len(e164) - rng.randint(1, min(6, len(e164) - 3))
                tail = "".join(rng.choice("0123456789") for _ in range(len(e164) - keep))
                numbers.append(e164[:keep] + tail)
    for code in phonenumbers.COUNTRY_CODES_FOR_NON_GEO_REGIONS:
        example = phonenumbers.example_number_for_non_geo_entity(code)
        if example is not None:
            numbers.append(phonenumbers.format_number(example, PhoneNumberFormat.E164))
    return numbers


def random_after_codes(rng: random.Random, per_code: int) -> list[str]:
    numbers = []
    for code in COUNTRY_CODE_TO_REGION_CODE:
        prefix = str(code)
        for _ in range(per_code):
            length = rng.randint(1, 15 - len(prefix))
            numbers.append("+" + prefix + "".join(rng.choice("0123456789") for _ in range(length)))
    return numbers


def after_national_prefixes(rng: random.Random, tries_per_code: int) -> list[str]:
    """Random numbers whose national part parse may take for a national prefix to strip."""
    numbers = []
    for code in COUNTRY_CODE_TO_REGION_CODE:
        metadata = PhoneMetadata.metadata_for_region_or_calling_code(
            code, phonenumbers.region_code_for_country_code(code)
        )
        if metadata is None or not metadata.national_prefix_for_parsing:
            continue
        prefix = re.compile(metadata.national_prefix_for_parsing)
        for _ in range(tries_per_code):
            length = rng.randint(2, 15 - len(str(code)))
            national = "".join(rng.choice("0123456789") for _ in range(length))
            if prefix.match(national):
                numbers.append(f"+{code}{national}")
    return numbers


def random_e164(rng: random.Random, count: int) -> list[str]:
    return [
        "+"
        + rng.choice("123456789")
        + "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 14)))
        for _ in range(count)
    ]


def odd_spellings(numbers: list[str]) -> list[str]:
    out = []
    for number in numbers:
        out += [
            number[1:],
            number + "\n",
            number[:4] + " " + number[4:],
            number[:5] + "-" + number[5:],
            number[:3] + number[3:6].translate(ARABIC_INDIC) + number[6:],
        ]
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=300, help="random numbers per calling code")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    factory = NumberFactory(args.seed)
    simulated = [
        r.number for r in factory.records(60_000, ("US", "GB", "DE", "CA", "FR", "AU"), 0.5, 0.1)
    ]
    sets = {
        "examples and neighbours": examples(rng),
        "random after each calling code": random_after_codes(rng, args.samples),
        "after a national prefix": after_national_prefixes(rng, 10 * args.samples),
        "random strict E.164": random_e164(rng, 100_000),
        "simulator numbers": simulated,
        "odd spellings": odd_spellings(simulated[:2_000] + random_e164(rng, 2_000)),
    }
    failures = 0
    for name, numbers in sets.items():
        started = time.perf_counter()
        expected = [_parsed(number) for number in numbers]
        slow = time.perf_counter() - started
        started = time.perf_counter()
        answers = countries(numbers)
        fast = time.perf_counter() - started
        wrong = [
            (number, want, got)
            for number, want, got in zip(numbers, expected, answers, strict=True)
            if want != got
        ]
        failures += len(wrong)
        print(
            f"{name:32s} {len(numbers):8,d} numbers: {len(wrong)} disagree; "
            f"parse {slow / len(numbers) * 1e6:5.1f} us/number, columns "
            f"{fast / len(numbers) * 1e6:5.1f} us/number"
        )
        for number, want, got in wrong[:10]:
            print(f"    {number!r}: phonenumbers {want}, columns {got}")
    print("PASS: the columns agree everywhere" if not failures else f"FAIL: {failures} disagree")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
