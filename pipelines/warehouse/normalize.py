"""A verified listing as a pandas frame: the rows of `synthflow.number_snapshots`.

Numbers are written in E.164 and given their ISO 3166-1 region by the phonenumbers library.
A number phonenumbers cannot parse is kept as the API gave it (the E.164 check reports it);
nothing is dropped, since a dropped number would later read as `removed`.
"""

from __future__ import annotations

import re
from datetime import datetime

import pandas as pd
import phonenumbers

from pipelines.synthflow.client import Record

E164 = re.compile(r"^\+[1-9]\d{1,14}$")
SNAPSHOT_COLUMNS = [
    "snapshot_id",
    "workspace_id",
    "taken_at",
    "number",
    "sid",
    "is_available",
    "country",
]


def e164_and_country(raw: str) -> tuple[str, str | None]:
    """The number in E.164 and its region code (None when phonenumbers cannot tell)."""
    try:
        parsed = phonenumbers.parse(raw, None)
    except phonenumbers.NumberParseException:
        return raw, None
    number = (
        raw
        if E164.match(raw)
        else phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    )
    region = phonenumbers.region_code_for_number(parsed)
    return number, region if region and region != phonenumbers.UNKNOWN_REGION else None


def snapshot_frame(
    records: list[Record], *, snapshot_id: str, workspace_id: str, taken_at: datetime
) -> pd.DataFrame:
    """One row per number, typed as the table is."""
    normalized = [e164_and_country(number) for number, _, _ in records]
    frame = pd.DataFrame(
        {
            "number": pd.array([number for number, _ in normalized], dtype="string"),
            "sid": pd.array([sid for _, sid, _ in records], dtype="string"),
            "is_available": pd.array([flag for _, _, flag in records], dtype="boolean"),
            "country": pd.array([country for _, country in normalized], dtype="string"),
        }
    )
    frame.insert(0, "snapshot_id", snapshot_id)
    frame.insert(1, "workspace_id", workspace_id)
    frame.insert(2, "taken_at", pd.Timestamp(taken_at))
    return frame[SNAPSHOT_COLUMNS]
