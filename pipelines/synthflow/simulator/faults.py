"""Fault switches, and the answers of a broken or hostile Synthflow.

Decides which fault kinds exist, which page request a switched-on fault hits (`fail_next`
queues in call order and counts down; `break_workspace` holds until repaired), and what each
kind's answer looks like, down to the byte. The switches are not thread-safe: the Simulator
uses them with its lock held. Answers are built outside the lock from an already cut page.
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass, replace
from typing import Any

from pipelines.synthflow.simulator.api import Answer, Page, envelope, error, page_answer, to_json

FAULT_KINDS = (
    "429",  # Synthflow's error body; Retry-After only when fail_next(retry_after=) gives one
    "500",  # 500, 502, 503: the status, rotating through the three error body shapes
    "502",
    "503",
    "drop",  # the connection closes without an answer
    "truncate",  # a 200 whose body stops halfway under the full Content-Length
    "not_json",  # a 200 whose body is plain text
    "html",  # a 502 nginx proxy page, text/html
    "missing_field",  # a 200 page without total_records, then one without a record's number
    "wrong_type",  # a 200 page with total_records "many", then a record's is_available "yes"
    "extra_fields",  # a well-formed 200 page with unknown fields added at every level
    "slow",  # a well-formed 200 page sent after `slow_s`
    "trickle",  # a well-formed 200 page, body sent a byte per `trickle_interval_s`
    "lying_total",  # a 200 page of the real records whose total_records is 10**12
    "bad_gzip",  # a 200 with Content-Encoding: gzip whose body is not gzip
    "gzip_bomb",  # a 200, Content-Encoding: gzip, inflating to `gzip_bomb_bytes` spaces
    "error_status",  # a 200 whose status is "error" with an empty listing and total 0
    "echo_key",  # a 500 whose error description echoes the request's Authorization header
    "odd_error",  # a 500 whose JSON nests 100,000 deep, then one whose `loc` is not a list
    "missing_sid",  # a 200 page whose records have no "sid" key at all
)
# The kinds whose page a client may count as read: they alone take part in churn, repeats
# and `pages_served`.
WELL_FORMED = frozenset({"extra_fields", "slow", "trickle"})

_LYING_TOTAL = 10**12
# Gzip's magic and header, then a deflate block of the reserved type 3: every decoder fails.
_NOT_GZIP = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff" + b"\xff" * 22
_GZIP = (("Content-Encoding", "gzip"),)
_BOMB_CHUNK = 1 << 20
_NOT_JSON = b"upstream connect error or disconnect/reset before headers. reset reason: overflow"
_PROXY_PAGE = (
    b"<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n"
    b"<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n"
    b"</body>\r\n</html>\r\n"
)
_ODD_ERROR_BODIES = (b"[" * 100_000 + b"]" * 100_000, b'{"detail": [{"loc": 5, "msg": "odd"}]}')
_SERVER_ERRORS = {
    500: ("internal_error", "Internal Server Error"),
    502: ("bad_gateway", "Bad Gateway"),
    503: ("service_unavailable", "Service Unavailable"),
}


@dataclass(frozen=True)
class Fault:
    """The fault one page request gets."""

    kind: str
    variant: int  # how many answers of this kind came before: which shape this one takes
    retry_after: str | None = None


@dataclass(eq=False)  # removed from the queue by identity
class _Switch:
    kind: str
    remaining: int
    workspace_id: str | None  # None: any workspace
    retry_after: str | None


def check(kind: str, count: int = 1) -> None:
    """Refuse an unknown kind or a count below 1, naming what is allowed."""
    if kind not in FAULT_KINDS:
        raise ValueError(f"unknown fault kind {kind!r}; choose one of {', '.join(FAULT_KINDS)}")
    if count < 1:
        raise ValueError(f"count must be 1 or more, got {count}")


class FaultSwitches:
    """Which faults are switched on, and which one the next page request of a workspace gets."""

    def __init__(self) -> None:
        self._pending: list[_Switch] = []
        self._broken: dict[str, str] = {}
        self._answered: dict[str, int] = {}  # per kind, so variants rotate

    def fail_next(
        self, kind: str, count: int, workspace_id: str | None, retry_after: str | None
    ) -> None:
        self._pending.append(_Switch(kind, count, workspace_id, retry_after))

    def break_workspace(self, workspace_id: str, kind: str) -> None:
        self._broken[workspace_id] = kind

    def repair_workspace(self, workspace_id: str) -> None:
        self._broken.pop(workspace_id, None)

    def take(self, workspace_id: str) -> Fault | None:
        """The fault this page request gets, counted off its switch; a broken workspace's first."""
        kind, retry_after = self._broken.get(workspace_id), None
        if kind is None:
            switch = next(
                (s for s in self._pending if s.workspace_id in (None, workspace_id)), None
            )
            if switch is None:
                return None
            switch.remaining -= 1
            if switch.remaining == 0:
                self._pending.remove(switch)
            kind, retry_after = switch.kind, switch.retry_after
        variant = self._answered.get(kind, 0)
        self._answered[kind] = variant + 1
        return Fault(kind, variant, retry_after)


def answer(
    page: Page,
    fault: Fault | None,
    *,
    authorization: str | None,
    slow_s: float,
    trickle_s: float,
    bomb_bytes: int,
) -> Answer:
    """What `fault` makes of `page` (without one, the page); `fault.variant` picks a shape."""
    if fault is None:
        return page_answer(page)
    kind, request_id = fault.kind, page.request_id
    if kind == "slow":
        return replace(page_answer(page), delay_s=slow_s)
    if kind == "trickle":
        return replace(page_answer(page), mode="trickle", trickle_s=trickle_s)
    if kind == "truncate":
        return replace(page_answer(page), mode="truncate")
    if kind == "lying_total":
        return page_answer(replace(page, total=_LYING_TOTAL))
    if kind == "drop":
        return Answer(0, b"", request_id, mode="drop")
    if kind == "not_json":
        return Answer(200, _NOT_JSON, request_id)
    if kind == "html":
        return Answer(502, _PROXY_PAGE, request_id, content_type="text/html")
    if kind == "bad_gzip":
        return Answer(200, _NOT_GZIP, request_id, headers=_GZIP)
    if kind == "gzip_bomb":
        return Answer(200, _gzip_bomb(bomb_bytes), request_id, headers=_GZIP)
    if kind == "429":
        headers = () if fault.retry_after is None else (("Retry-After", fault.retry_after),)
        return error(429, "Too Many Requests", request_id, "rate_limited", headers=headers)
    if kind in ("500", "502", "503"):
        return _server_error(int(kind), fault.variant, request_id)
    if kind == "echo_key":
        # The one body that carries a token: clients must strip it before showing the error.
        description = f"upstream rejected header Authorization: {authorization}"
        return error(500, description, request_id, "internal_error")
    if kind == "odd_error":
        return Answer(500, _ODD_ERROR_BODIES[fault.variant % 2], request_id)
    return Answer(200, to_json(_bent_envelope(page, fault)), request_id)


def _server_error(status: int, variant: int, request_id: str) -> Answer:
    """A 5xx in one of the three body shapes seen in the wild, in turn."""
    category, reason = _SERVER_ERRORS[status]
    if variant % 3 == 0:
        return error(status, reason, request_id, category)
    if variant % 3 == 1:
        body: dict[str, Any] = {"detail": reason}
    else:
        body = {"error": category, "message": f"{reason}: please retry the request"}
    return Answer(status, to_json(body), request_id)


def _bent_envelope(page: Page, fault: Fault) -> dict[str, Any]:
    """The success body with the fields a schema-breaking kind drops, retypes or adds."""
    body = envelope(page)
    pagination = body["response"]["pagination"]
    records = body["response"]["phone_numbers"]
    middle = len(records) // 2
    second_shape = fault.variant % 2 == 1 and records
    if fault.kind == "missing_field":
        if second_shape:
            del records[middle]["number"]
        else:
            del pagination["total_records"]
    elif fault.kind == "wrong_type":
        if second_shape:
            records[middle]["is_available"] = "yes"
        else:
            pagination["total_records"] = "many"
    elif fault.kind == "missing_sid":
        for record in records:
            del record["sid"]
    elif fault.kind == "extra_fields":
        body["request_id"] = page.request_id
        body["api_version"] = "2026-01"
        pagination["has_more"] = page.offset + len(records) < page.total
        pagination["cursor"] = None
        for record in records:
            record["friendly_name"] = record["number"]
            record["provider_name"] = "twilio" if record["sid"] else "custom"
            record["assistants"] = []
    elif fault.kind == "error_status":
        body["status"] = "error"
        pagination["total_records"] = 0
        records.clear()
    return body


@functools.lru_cache(maxsize=4)
def _gzip_bomb(size: int) -> bytes:
    """One gzip member that inflates to `size` spaces; about 1 KB per MB, cached per size.

    A megabyte of spaces is deflated once and ended with a full flush: that makes the piece a
    byte-aligned run of non-final blocks that refers to nothing before it, so the piece
    repeated is a valid deflate stream and 1 GB costs a CRC pass, not a compression. One
    member, not concatenated ones: some decoders (httpx's) stop after the first member.
    """
    chunk = b" " * _BOMB_CHUNK
    whole, rest = divmod(size, _BOMB_CHUNK)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    piece = compressor.compress(chunk) + compressor.flush(zlib.Z_FULL_FLUSH)
    crc = 0
    for _ in range(whole):
        crc = zlib.crc32(chunk, crc)
    crc = zlib.crc32(chunk[:rest], crc)
    ending = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    last = ending.compress(chunk[:rest]) + ending.flush()
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, no time
    trailer = struct.pack("<II", crc, size & 0xFFFFFFFF)
    return header + piece * whole + last + trailer
