"""Seeded, realistic phone numbers: what the simulator's workspaces are filled with.

Promises: every number is a valid E.164 number (`phonenumbers.is_valid_number`) of the region
it was asked for, no number is handed out twice by one `NumberFactory`, SIDs look like Twilio's
(`PN` + 32 lowercase hex), and the same seed with the same sequence of calls gives the same data.

Numbers come in blocks that share everything but their last four digits, the way carriers sell
ranges. A block's prefix is drawn at random and checked once with the full `phonenumbers`
validation (region and line type at several sample suffixes); each number is then checked only
against the region's compiled line-type pattern, which is about ten times cheaper. That keeps
200,000 numbers within a second or two.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

import phonenumbers
from phonenumbers import PhoneNumberType

_SUFFIX_DIGITS = 4
_BLOCK_SIZE = 10**_SUFFIX_DIGITS
_SAMPLE_SUFFIXES = 6
_MAX_PREFIX_TRIES = 2000
_LINE_TYPES = (PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE)
_VALID_TYPES = frozenset(
    {PhoneNumberType.MOBILE, PhoneNumberType.FIXED_LINE, PhoneNumberType.FIXED_LINE_OR_MOBILE}
)


@dataclass(frozen=True, slots=True)
class PhoneNumber:
    """One record of a `GET /v2/numbers` listing."""

    number: str  # E.164
    sid: str | None  # Twilio-style "PN" + 32 lowercase hex; None for custom (SIP) numbers
    is_available: bool  # True: not assigned to an inbound agent


def make_sid(rng: random.Random) -> str:
    """A Twilio-style phone number SID."""
    return f"PN{rng.getrandbits(128):032x}"


def make_workspace_id(rng: random.Random) -> str:
    """An ID shaped like Synthflow's: a 13-digit millisecond timestamp, "x", 18 digits."""
    millis = rng.randint(1_650_000_000_000, 1_760_000_000_000)
    tail = rng.randint(10**17, 10**18 - 1)
    return f"{millis}x{tail}"


class _NumberBlocks:
    """Fresh numbers of one region and line type, one prefix block after another."""

    def __init__(self, region: str, line_type: int, rng: random.Random) -> None:
        example = phonenumbers.example_number_for_type(region, line_type)
        if example is None:
            raise ValueError(f"phonenumbers has no {line_type} example for region {region}")
        metadata = phonenumbers.PhoneMetadata.metadata_for_region(region)
        desc = metadata.mobile if line_type == PhoneNumberType.MOBILE else metadata.fixed_line
        self._region = region
        self._line_type = line_type
        self._rng = rng
        self._country_code = str(example.country_code)
        self._example_nsn = phonenumbers.national_significant_number(example)
        self._pattern = re.compile(desc.national_number_pattern)
        self._used_prefixes: set[str] = set()
        self._prefix = ""
        self._start = 0
        self._step = 1
        self._position = _BLOCK_SIZE  # forces a new block on first use

    def next_number(self, taken: set[str]) -> str:
        """The next number of this region and type that is not in `taken` (and add it there)."""
        while True:
            if self._position >= _BLOCK_SIZE:
                self._new_block()
            suffix = (self._start + self._position * self._step) % _BLOCK_SIZE
            self._position += 1
            nsn = f"{self._prefix}{suffix:0{_SUFFIX_DIGITS}d}"
            number = f"+{self._country_code}{nsn}"
            if number not in taken and self._pattern.fullmatch(nsn):
                taken.add(number)
                return number

    def _new_block(self) -> None:
        self._prefix = self._draw_prefix()
        self._used_prefixes.add(self._prefix)
        self._start = self._rng.randrange(_BLOCK_SIZE)
        # A step coprime to 10**k walks every suffix once, in an order that does not look serial.
        self._step = self._rng.randrange(1001, _BLOCK_SIZE, 2)
        while self._step % 5 == 0:
            self._step = self._rng.randrange(1001, _BLOCK_SIZE, 2)
        self._position = 0

    def _draw_prefix(self) -> str:
        length = len(self._example_nsn) - _SUFFIX_DIGITS
        lead = self._example_nsn[0]
        for _ in range(_MAX_PREFIX_TRIES):
            rest = "".join(str(self._rng.randrange(10)) for _ in range(length - 1))
            prefix = lead + rest
            if prefix not in self._used_prefixes and self._block_is_valid(prefix):
                return prefix
        # Fall back to the library's own example range, shifted to stay unused.
        base = int(self._example_nsn[:length])
        for offset in range(10 ** (length - 1)):
            prefix = str(base + offset).zfill(length)
            if prefix not in self._used_prefixes and self._block_is_valid(prefix):
                return prefix
        raise RuntimeError(f"ran out of {self._region} number ranges")

    def _block_is_valid(self, prefix: str) -> bool:
        edge_suffixes = ["0" * _SUFFIX_DIGITS, "9" * _SUFFIX_DIGITS]
        samples = edge_suffixes + [
            f"{self._rng.randrange(_BLOCK_SIZE):0{_SUFFIX_DIGITS}d}"
            for _ in range(_SAMPLE_SUFFIXES)
        ]
        # Cheap pattern check first: most random prefixes fail it.
        if not all(self._pattern.fullmatch(prefix + s) for s in samples):
            return False
        for suffix in samples:
            parsed = phonenumbers.parse(f"+{self._country_code}{prefix}{suffix}")
            if not phonenumbers.is_valid_number(parsed):
                return False
            if phonenumbers.region_code_for_number(parsed) != self._region:
                return False
            if phonenumbers.number_type(parsed) not in _VALID_TYPES:
                return False
        return True


class NumberFactory:
    """Hands out unique, valid phone numbers and records for one simulator, from one seed."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.taken: set[str] = set()
        self._blocks: dict[str, list[_NumberBlocks]] = {}

    def reserve(self, number: str) -> None:
        """Never hand out `number` (it came from outside the factory)."""
        self.taken.add(number)

    def fresh_number(self, country: str) -> str:
        blocks = self._region_blocks(country)
        return self.rng.choice(blocks).next_number(self.taken)

    def records(
        self,
        count: int,
        countries: Sequence[str],
        available_share: float,
        custom_share: float,
    ) -> list[PhoneNumber]:
        """`count` fresh records spread over `countries`, ~`custom_share` of them without SID."""
        if count < 0:
            raise ValueError(f"count must be 0 or more, got {count}")
        if not countries:
            raise ValueError("countries must name at least one region, e.g. ('US',)")
        for share_name, share in (
            ("available_share", available_share),
            ("custom_share", custom_share),
        ):
            if not 0.0 <= share <= 1.0:
                raise ValueError(f"{share_name} must be between 0 and 1, got {share}")
        sources = [self._region_blocks(country) for country in countries]
        rng, taken = self.rng, self.taken
        records = []
        for _ in range(count):
            number = rng.choice(rng.choice(sources)).next_number(taken)
            sid = None if rng.random() < custom_share else make_sid(rng)
            records.append(PhoneNumber(number, sid, rng.random() < available_share))
        return records

    def _region_blocks(self, country: str) -> list[_NumberBlocks]:
        region = country.upper()
        blocks = self._blocks.get(region)
        if blocks is None:
            if region not in phonenumbers.SUPPORTED_REGIONS:
                raise ValueError(
                    f"unknown country {country!r}: use an ISO 3166-1 alpha-2 code such as 'US'"
                )
            blocks = [
                _NumberBlocks(region, line_type, self.rng)
                for line_type in _LINE_TYPES
                if phonenumbers.example_number_for_type(region, line_type) is not None
            ]
            if not blocks:
                raise ValueError(f"country {country!r} has no mobile or fixed-line numbers")
            self._blocks[region] = blocks
        return blocks
