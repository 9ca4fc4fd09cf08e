"""The Synthflow simulator keeps the contract of `synthflow-api.md`, over real HTTP.

What the rest of the project relies on:
- `GET /v2/numbers` pages a workspace's listing in a stable order, echoes `limit` and `offset`
  (limit 20 and offset 0 by default, silently capped by `page_size_cap`), and counts
  `total_records` after the `is_available` filter.
- Errors have the API's shapes: 400 unknown workspace, 401 missing or rejected key, 404 unknown
  path, 422 FastAPI validation lists; no token ever appears in a body (but in the "echo_key"
  fault's, made to test that clients strip it); every answer carries `X-Request-Id`.
- Each fault kind does what its name says, once per `fail_next` or until `repair_workspace`;
  churn and duplicate switches make a read inconsistent in ways a client can see; the
  server-side budget answers 429 with Retry-After.
- The hostile kinds (a trickled body, a lying total, bad gzip, a gzip bomb, an "error" status
  in a 200, a key echoed in an error, records without "sid") hold the same way, over real HTTP;
  a trickle ends soon after its client hangs up or the simulator stops.
- Mutations show in the next page, markup and odd numbers verbatim; seeded data are valid,
  unique E.164 numbers with Twilio-style SIDs, deterministic for a seed, and fast to make in
  bulk.
"""

from __future__ import annotations

import json
import queue
import re
import socket
import ssl
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx
import phonenumbers
import pytest

from pipelines.synthflow.simulator import (
    FAULT_KINDS,
    PhoneNumber,
    Simulator,
    demo_simulator,
)

WS = "1710107690998x536152705164378100"
WS2 = "1722222222222x111111111111111111"
TOKEN = "sk-test-7f3a9c1e-never-echo-me"
SID = re.compile(r"^PN[0-9a-f]{32}$")
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
# Plain HTTP on loopback: one shared TLS context spares every client loading the CA bundle.
TLS = ssl.create_default_context()


def client(base_url: str, token: str = "x", **settings: Any) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.Client(base_url=base_url, headers=headers, verify=TLS, **settings)


def bare_get(url: str, **settings: Any) -> httpx.Response:
    return httpx.get(url, verify=TLS, **settings)


@pytest.fixture
def sim() -> Iterator[Simulator]:
    simulator = Simulator(seed=7)
    simulator.add_workspace(WS, 45)
    simulator.add_workspace(WS2, 12)
    with simulator:
        yield simulator


@pytest.fixture
def api(sim: Simulator) -> Iterator[httpx.Client]:
    with client(sim.base_url, TOKEN, timeout=5) as api_client:
        yield api_client


def get_page(api: httpx.Client, workspace: str = WS, **params: Any) -> dict[str, Any]:
    response = api.get("/numbers", params={"workspace": workspace, **params})
    assert response.status_code == 200, response.text
    return response.json()["response"]


def numbers_of(page: dict[str, Any]) -> list[str]:
    return [record["number"] for record in page["phone_numbers"]]


def read_all(api: httpx.Client, workspace: str = WS, limit: int = 10) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    while True:
        page = get_page(api, workspace, limit=limit, offset=len(records))
        records += page["phone_numbers"]
        if not page["phone_numbers"]:
            return records


def as_records(numbers: list[PhoneNumber]) -> list[dict[str, Any]]:
    return [{"number": p.number, "sid": p.sid, "is_available": p.is_available} for p in numbers]


# --- pagination ----------------------------------------------------------------------------


def test_pages_echo_limit_and_offset_and_the_order_is_stable(
    sim: Simulator, api: httpx.Client
) -> None:
    page = get_page(api, limit=10, offset=30)
    assert page["pagination"] == {"total_records": 45, "limit": 10, "offset": 30}
    assert len(page["phone_numbers"]) == 10
    first_read, second_read = read_all(api), read_all(api, limit=7)
    assert first_read == second_read == as_records(sim.numbers(WS))


def test_limit_defaults_to_20_and_offset_to_0(api: httpx.Client) -> None:
    page = get_page(api)
    assert page["pagination"] == {"total_records": 45, "limit": 20, "offset": 0}
    assert len(page["phone_numbers"]) == 20


def test_an_offset_past_the_end_gives_an_empty_page(api: httpx.Client) -> None:
    page = get_page(api, limit=10, offset=45)
    assert page["phone_numbers"] == []
    assert page["pagination"]["total_records"] == 45


def test_page_size_cap_silently_caps_the_limit_and_echoes_the_capped_one() -> None:
    with Simulator(page_size_cap=7) as simulator:
        simulator.add_workspace(WS, 30)
        with client(simulator.base_url) as c:
            page = get_page(c, limit=50)
    assert page["pagination"] == {"total_records": 30, "limit": 7, "offset": 0}
    assert len(page["phone_numbers"]) == 7


@pytest.mark.parametrize("wanted", [True, False])
def test_is_available_filters_the_listing_and_its_total(
    sim: Simulator, api: httpx.Client, wanted: bool
) -> None:
    expected = [p.number for p in sim.numbers(WS) if p.is_available is wanted]
    page = get_page(api, limit=100, is_available=str(wanted).lower())
    assert page["pagination"]["total_records"] == len(expected)
    assert numbers_of(page) == expected
    assert 0 < len(expected) < 45


def test_pages_are_valid_json_even_for_numbers_that_need_escaping(
    sim: Simulator, api: httpx.Client
) -> None:
    odd = PhoneNumber('+1"555\\0100', "PN\u00e9\n", True)
    sim.add_number(WS2, odd)
    assert get_page(api, WS2, limit=100)["phone_numbers"][-1] == as_records([odd])[0]


def test_fifty_concurrent_page_requests_are_all_answered(sim: Simulator, api: httpx.Client) -> None:
    sim.add_workspace("big", 500)
    offsets = [i * 10 for i in range(50)]
    with ThreadPoolExecutor(max_workers=50) as pool:
        pages = list(pool.map(lambda o: get_page(api, "big", limit=10, offset=o), offsets))
    served = [number for page in pages for number in numbers_of(page)]
    assert served == [p.number for p in sim.numbers("big")]


def test_latency_sleeps_overlap_across_concurrent_requests() -> None:
    with Simulator(latency_s=0.3) as simulator:
        simulator.add_workspace(WS, 5)
        with client(simulator.base_url) as c:
            started = time.perf_counter()
            with ThreadPoolExecutor(max_workers=10) as pool:
                list(pool.map(lambda _: get_page(c), range(10)))
            elapsed = time.perf_counter() - started
    assert 0.3 <= elapsed < 2.5  # serialized, ten requests would take at least 3 s


# --- errors --------------------------------------------------------------------------------


def test_unknown_workspace_is_400_with_synthflows_error_shape(api: httpx.Client) -> None:
    response = api.get("/numbers", params={"workspace": "nope"})
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert detail["status"] == 400
    assert detail["description"] == "Workspace nope not found"
    assert detail["category"] == "bad_request"
    assert detail["request_id"] == response.headers["X-Request-Id"]


@pytest.mark.parametrize("authorization", [None, "", "Bearer", f"Basic {TOKEN}", f"Token {TOKEN}"])
def test_a_missing_or_malformed_key_is_401(sim: Simulator, authorization: str | None) -> None:
    headers = {} if authorization is None else {"Authorization": authorization}
    response = bare_get(f"{sim.base_url}/numbers", params={"workspace": WS}, headers=headers)
    assert response.status_code == 401
    assert response.json()["detail"]["category"] == "unauthorized"
    assert TOKEN not in response.text


def test_api_keys_accept_only_the_workspaces_own_token() -> None:
    keys = {WS: "key-of-ws-" + TOKEN, WS2: "key-of-ws2-" + TOKEN}
    with Simulator(api_keys=keys) as simulator:
        simulator.add_workspace(WS, 3)
        simulator.add_workspace(WS2, 3)

        def status(workspace: str, token: str) -> httpx.Response:
            return bare_get(
                f"{simulator.base_url}/numbers",
                params={"workspace": workspace},
                headers={"Authorization": f"Bearer {token}"},
            )

        assert status(WS, keys[WS]).status_code == 200
        wrong = status(WS, keys[WS2])
        assert wrong.status_code == 401
        assert "API key" in wrong.json()["detail"]["description"]
        assert status("unknown", keys[WS]).status_code == 400
        stranger = status("unknown", TOKEN)
        assert stranger.status_code == 401
        for response in (wrong, stranger):
            assert TOKEN not in response.text
            assert not any(TOKEN in value for value in response.headers.values())


def test_unknown_paths_are_404_not_found(api: httpx.Client) -> None:
    for path in ("/nope", "/numbers/12015550123", "/numbers/"):
        response = api.get(path, params={"workspace": WS})
        assert response.status_code == 404
        assert response.json() == {"detail": "Not Found"}


def test_other_methods_on_the_listing_are_405(api: httpx.Client) -> None:
    assert api.post("/numbers", json={"workspace": WS}).status_code == 405


@pytest.mark.parametrize(
    ("params", "field", "error_type"),
    [
        ({"workspace": WS, "limit": "-1"}, "limit", "greater_than_equal"),
        ({"workspace": WS, "limit": "0"}, "limit", "greater_than_equal"),
        ({"workspace": WS, "limit": "ten"}, "limit", "int_parsing"),
        ({"workspace": WS, "offset": "-5"}, "offset", "greater_than_equal"),
        ({"workspace": WS, "offset": "1.5"}, "offset", "int_parsing"),
        ({"workspace": WS, "is_available": "maybe"}, "is_available", "bool_parsing"),
        ({"limit": "10"}, "workspace", "missing"),
    ],
)
def test_invalid_query_parameters_are_422_with_a_fastapi_validation_list(
    api: httpx.Client, params: dict[str, str], field: str, error_type: str
) -> None:
    response = api.get("/numbers", params=params)
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["query", field]
    assert problem["type"] == error_type
    assert problem["msg"]
    assert TOKEN not in response.text


def test_every_answer_carries_a_request_id(sim: Simulator, api: httpx.Client) -> None:
    sim.fail_next("503")
    responses = [
        api.get("/numbers", params={"workspace": WS}),  # the 503
        api.get("/numbers", params={"workspace": WS}),
        api.get("/numbers", params={"workspace": "nope"}),
        api.get("/numbers", params={"workspace": WS, "limit": "x"}),
        api.get("/elsewhere"),
        bare_get(f"{sim.base_url}/numbers", params={"workspace": WS}),
    ]
    assert [r.status_code for r in responses] == [503, 200, 400, 422, 404, 401]
    ids = [r.headers["X-Request-Id"] for r in responses]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"[0-9a-f-]{36}", request_id) for request_id in ids)


# --- faults --------------------------------------------------------------------------------


def test_server_errors_rotate_through_the_error_body_shapes(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("500", 3)
    bodies = [api.get("/numbers", params={"workspace": WS}) for _ in range(3)]
    assert [r.status_code for r in bodies] == [500, 500, 500]
    first, second, third = (r.json() for r in bodies)
    assert first["detail"]["status"] == 500
    assert first["detail"]["request_id"] == bodies[0].headers["X-Request-Id"]
    assert isinstance(second["detail"], str)
    assert set(third) == {"error", "message"}
    assert api.get("/numbers", params={"workspace": WS}).status_code == 200


@pytest.mark.parametrize("kind", ["502", "503"])
def test_gateway_errors_answer_their_status(sim: Simulator, api: httpx.Client, kind: str) -> None:
    sim.fail_next(kind)
    response = api.get("/numbers", params={"workspace": WS})
    assert response.status_code == int(kind)
    assert "detail" in response.json()


def test_html_fault_is_a_502_proxy_page(sim: Simulator, api: httpx.Client) -> None:
    sim.fail_next("html")
    response = api.get("/numbers", params={"workspace": WS})
    assert response.status_code == 502
    assert response.headers["Content-Type"].startswith("text/html")
    assert response.text.startswith("<html>")


def test_429_fault_sends_retry_after_verbatim_or_not_at_all(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("429", retry_after="garbage")
    sim.fail_next("429")
    with_header = api.get("/numbers", params={"workspace": WS})
    without_header = api.get("/numbers", params={"workspace": WS})
    assert with_header.status_code == without_header.status_code == 429
    assert with_header.headers["Retry-After"] == "garbage"
    assert "Retry-After" not in without_header.headers


def test_drop_closes_the_connection_without_an_answer(sim: Simulator, api: httpx.Client) -> None:
    sim.fail_next("drop")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        api.get("/numbers", params={"workspace": WS})
    assert api.get("/numbers", params={"workspace": WS}).status_code == 200


def raw_get(base_url: str, query: str) -> bytes:
    """One GET over a bare socket, read until the server closes it."""
    host, port = base_url.removeprefix("http://").removesuffix("/v2").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as conn:
        request = f"GET /v2/numbers?{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n\r\n"
        conn.sendall(request.encode())
        chunks = []
        while chunk := conn.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_truncate_sends_half_the_body_under_the_full_content_length(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("truncate")
    head, _, body = raw_get(sim.base_url, f"workspace={WS}&limit=10").partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    length = int(re.search(rb"Content-Length: (\d+)", head).group(1))  # type: ignore[union-attr]
    assert len(body) == length // 2
    with pytest.raises(json.JSONDecodeError):
        json.loads(body)
    sim.fail_next("truncate")
    with pytest.raises(httpx.RemoteProtocolError):
        api.get("/numbers", params={"workspace": WS})


def test_not_json_is_a_200_whose_body_does_not_parse(sim: Simulator, api: httpx.Client) -> None:
    sim.fail_next("not_json")
    response = api.get("/numbers", params={"workspace": WS})
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_missing_field_drops_total_records_then_a_records_number(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("missing_field", 2)
    first, second = get_page(api, limit=10), get_page(api, limit=10)
    assert "total_records" not in first["pagination"]
    assert second["pagination"]["total_records"] == 45
    assert sum("number" not in record for record in second["phone_numbers"]) == 1


def test_wrong_type_makes_total_records_a_word_then_a_flag_a_string(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("wrong_type", 2)
    first, second = get_page(api, limit=10), get_page(api, limit=10)
    assert first["pagination"]["total_records"] == "many"
    assert [r["is_available"] for r in second["phone_numbers"]].count("yes") == 1


def test_extra_fields_keep_every_known_field_right(sim: Simulator, api: httpx.Client) -> None:
    sim.fail_next("extra_fields")
    response = api.get("/numbers", params={"workspace": WS, "limit": 5})
    body = response.json()
    assert set(body) > {"status", "response"}
    page = body["response"]
    assert set(page["pagination"]) > {"total_records", "limit", "offset"}
    assert page["pagination"]["total_records"] == 45
    expected = as_records(sim.numbers(WS)[:5])
    assert [
        {k: r[k] for k in ("number", "sid", "is_available")} for r in page["phone_numbers"]
    ] == (expected)
    assert all(len(record) > 3 for record in page["phone_numbers"])


def test_slow_answers_after_slow_s_so_a_short_timeout_fires() -> None:
    with Simulator(slow_s=0.4) as simulator:
        simulator.add_workspace(WS, 5)
        with client(simulator.base_url) as c:
            simulator.fail_next("slow")
            with pytest.raises(httpx.ReadTimeout):
                c.get("/numbers", params={"workspace": WS}, timeout=0.1)
            simulator.fail_next("slow")
            started = time.perf_counter()
            page = get_page(c)
            assert time.perf_counter() - started >= 0.4
    assert page["pagination"]["total_records"] == 5


def test_fail_next_counts_down_and_can_target_one_workspace(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("503", 2, workspace_id=WS2)
    statuses = [api.get("/numbers", params={"workspace": w}).status_code for w in (WS, WS2, WS2)]
    assert statuses == [200, 503, 503]
    assert api.get("/numbers", params={"workspace": WS2}).status_code == 200
    assert sim.stats.faults_served == {"503": 2}


def test_a_broken_workspace_fails_until_repaired(sim: Simulator, api: httpx.Client) -> None:
    sim.break_workspace(WS, "500")
    for _ in range(3):
        assert api.get("/numbers", params={"workspace": WS}).status_code == 500
    assert api.get("/numbers", params={"workspace": WS2}).status_code == 200
    sim.repair_workspace(WS)
    assert api.get("/numbers", params={"workspace": WS}).status_code == 200


def test_unknown_fault_kinds_are_refused(sim: Simulator) -> None:
    assert len(FAULT_KINDS) == 20
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.fail_next("teapot")
    with pytest.raises(ValueError, match="unknown fault kind"):
        sim.break_workspace(WS, "418")


# --- hostile answers -----------------------------------------------------------------------

HOSTILE_KINDS = (
    "trickle",
    "lying_total",
    "bad_gzip",
    "gzip_bomb",
    "error_status",
    "echo_key",
    "missing_sid",
)


def raw_answer(api: httpx.Client, workspace: str = WS, **params: Any) -> tuple[int, str, bytes]:
    """Status, Content-Encoding and the body as sent (not inflated) of one page request."""
    with api.stream("GET", "/numbers", params={"workspace": workspace, **params}) as response:
        body = b"".join(response.iter_raw())
        return response.status_code, response.headers.get("Content-Encoding", ""), body


def eventually(condition: Callable[[], bool], within_s: float) -> None:
    """Poll `condition` until it holds; fail if it still does not after `within_s`."""
    deadline = time.perf_counter() + within_s
    while not condition():
        assert time.perf_counter() < deadline, f"still not true after {within_s} s"
        time.sleep(0.01)


@pytest.mark.parametrize("kind", HOSTILE_KINDS)
def test_hostile_kinds_count_down_with_fail_next_and_persist_with_break_workspace(
    sim: Simulator, api: httpx.Client, kind: str
) -> None:
    sim.trickle_interval_s = 0.0
    sim.gzip_bomb_bytes = 1 << 16
    clean = raw_answer(api, limit=3)
    sim.fail_next(kind, 2)
    faulty = [raw_answer(api, limit=3) for _ in range(2)]
    assert raw_answer(api, limit=3) == clean
    assert sim.stats.faults_served == {kind: 2}
    if kind != "trickle":  # a trickle's bytes are the clean page's; only their pace differs
        assert clean not in faulty
    sim.break_workspace(WS, kind)
    for _ in range(3):
        raw_answer(api, limit=3)
    assert raw_answer(api, WS2)[0] == 200
    assert sim.stats.faults_served == {kind: 5}
    sim.repair_workspace(WS)
    assert raw_answer(api, limit=3) == clean


def test_trickle_sends_the_page_a_byte_at_a_time_so_no_single_read_times_out() -> None:
    interval_s = 0.005
    with Simulator(trickle_interval_s=interval_s) as simulator:
        simulator.add_workspace(WS, 3)
        params = {"workspace": WS, "offset": 3}  # an empty page: about 100 bytes
        with client(simulator.base_url, timeout=0.1) as c:  # 0.1 s for any one read
            clean = c.get("/numbers", params=params)
            simulator.fail_next("trickle")
            started = time.perf_counter()
            trickled = c.get("/numbers", params=params)
            elapsed = time.perf_counter() - started
    assert trickled.status_code == 200
    assert trickled.content == clean.content
    assert int(trickled.headers["Content-Length"]) == len(clean.content)
    assert elapsed >= len(clean.content) * interval_s >= 0.4


def test_a_client_that_hangs_up_mid_trickle_frees_the_handler() -> None:
    with Simulator(trickle_interval_s=0.05) as simulator:
        simulator.add_workspace(WS, 3)  # about 350 bytes: 17 s of trickle
        simulator.fail_next("trickle")
        with client(simulator.base_url, timeout=5) as c:
            with c.stream("GET", "/numbers", params={"workspace": WS}) as response:
                assert next(response.iter_raw(1)) == b"{"
                assert simulator.trickles_in_progress == 1
            eventually(lambda: simulator.trickles_in_progress == 0, within_s=1.0)
            assert c.get("/numbers", params={"workspace": WS}).status_code == 200


def test_stop_ends_a_trickle_at_once_and_the_client_sees_a_short_body() -> None:
    simulator = Simulator(trickle_interval_s=0.05)
    simulator.add_workspace(WS, 3)
    url = simulator.start()
    simulator.fail_next("trickle")
    with (
        client(url, timeout=5) as c,
        c.stream("GET", "/numbers", params={"workspace": WS}) as response,
    ):
        assert simulator.trickles_in_progress == 1
        started = time.perf_counter()
        simulator.stop()
        assert time.perf_counter() - started < 1.0
        eventually(lambda: simulator.trickles_in_progress == 0, within_s=0.5)
        with pytest.raises(httpx.RemoteProtocolError):
            response.read()


def test_lying_total_claims_a_trillion_records_over_the_real_page(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("lying_total")
    page = get_page(api, limit=10, offset=10)
    assert page["pagination"] == {"total_records": 10**12, "limit": 10, "offset": 10}
    assert page["phone_numbers"] == as_records(sim.numbers(WS)[10:20])


def test_bad_gzip_is_a_200_labelled_gzip_whose_body_does_not_inflate(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("bad_gzip", 2)
    status, encoding, body = raw_answer(api)
    assert (status, encoding) == (200, "gzip")
    with pytest.raises(zlib.error):
        zlib.decompress(body, 16 + zlib.MAX_WBITS)
    with pytest.raises(httpx.DecodingError):
        api.get("/numbers", params={"workspace": WS})


def test_gzip_bomb_is_a_small_valid_gzip_body_that_inflates_to_the_set_size(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.gzip_bomb_bytes = 64 << 20
    sim.fail_next("gzip_bomb")
    with api.stream("GET", "/numbers", params={"workspace": WS}) as response:
        assert response.status_code == 200
        assert response.headers["Content-Encoding"] == "gzip"
        assert int(response.headers["Content-Length"]) < 100_000
        inflated = 0
        for chunk in response.iter_bytes():  # httpx checks the CRC at the end
            assert not chunk.strip()
            inflated += len(chunk)
    assert inflated == 64 << 20


def test_the_default_gzip_bomb_is_a_gigabyte_in_about_a_megabyte_built_in_under_a_second(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("gzip_bomb")
    started = time.process_time()  # CPU time: other processes on the machine do not count
    status, encoding, body = raw_answer(api)
    assert time.process_time() - started < 1.0
    assert (status, encoding) == (200, "gzip")
    assert len(body) < 2_000_000
    assert struct.unpack("<I", body[-4:]) == (1 << 30,)  # gzip's trailer: the inflated size
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    assert inflater.decompress(body, 4 << 20) == b" " * (4 << 20)


def test_error_status_is_a_200_saying_error_over_an_empty_listing(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("error_status")
    response = api.get("/numbers", params={"workspace": WS, "limit": 10, "offset": 20})
    assert response.status_code == 200
    assert response.json() == {
        "status": "error",
        "response": {
            "pagination": {"total_records": 0, "limit": 10, "offset": 20},
            "phone_numbers": [],
        },
    }


def test_echo_key_is_a_retriable_500_that_echoes_the_authorization_header(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("echo_key")
    response = api.get("/numbers", params={"workspace": WS})
    assert response.status_code == 500
    assert response.json() == {
        "detail": {
            "status": 500,
            "description": f"upstream rejected header Authorization: Bearer {TOKEN}",
            "request_id": response.headers["X-Request-Id"],
            "category": "internal_error",
        }
    }
    after = api.get("/numbers", params={"workspace": WS})
    assert after.status_code == 200
    assert TOKEN not in after.text


def test_missing_sid_leaves_the_sid_key_out_of_every_record(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("missing_sid")
    page = get_page(api, limit=10)
    expected = [{"number": p.number, "is_available": p.is_available} for p in sim.numbers(WS)[:10]]
    assert page["phone_numbers"] == expected
    assert page["pagination"] == {"total_records": 45, "limit": 10, "offset": 0}


# --- churn, duplicates, rate budget --------------------------------------------------------


def test_churn_while_paging_shifts_later_offsets_and_moves_the_total(
    sim: Simulator, api: httpx.Client
) -> None:
    before = [p.number for p in sim.numbers(WS)]
    sim.churn_while_paging(WS, pages=2)
    pages = [get_page(api, limit=10, offset=offset) for offset in (0, 10, 20, 30, 40)]
    totals = [page["pagination"]["total_records"] for page in pages]
    assert totals == [45, 45, 46, 45, 45]  # an insert after page 2, a removal after page 3
    assert numbers_of(pages[2])[0] == numbers_of(pages[1])[-1]  # repeated
    served = {number for page in pages for number in numbers_of(page)}
    assert before[29] not in served  # skipped
    assert get_page(api, limit=10, offset=10)["pagination"]["total_records"] == 45  # over


def test_churn_forever_keeps_changing_the_listing(sim: Simulator, api: httpx.Client) -> None:
    sim.churn_while_paging(WS, add=0, remove=2)
    totals = [get_page(api, limit=5, offset=5)["pagination"]["total_records"] for _ in range(4)]
    assert totals == [45, 43, 41, 39]
    assert len(sim.numbers(WS)) == 37


def test_duplicate_across_pages_repeats_a_record_and_keeps_the_total(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.duplicate_across_pages(WS)
    pages = [get_page(api, limit=10, offset=offset) for offset in (0, 10, 20, 30, 40)]
    assert {page["pagination"]["total_records"] for page in pages} == {45}
    assert numbers_of(pages[1])[0] == numbers_of(pages[0])[-1]
    served = [number for page in pages for number in numbers_of(page)]
    assert len(served) == 45
    assert len(set(served)) == 44  # a deduplicating client ends one short
    assert [r["number"] for r in read_all(api)] == [p.number for p in sim.numbers(WS)]


def test_the_server_side_budget_answers_429_with_retry_after() -> None:
    with Simulator(requests_per_second=3) as simulator:
        simulator.add_workspace(WS, 5)
        with client(simulator.base_url) as c:
            responses = [c.get("/numbers", params={"workspace": WS}) for _ in range(5)]
        stats = simulator.stats
    assert [r.status_code for r in responses] == [200, 200, 200, 429, 429]
    assert all(int(r.headers["Retry-After"]) >= 1 for r in responses[3:])
    assert stats.rate_limited == 2
    assert stats.pages_served == 3
    assert stats.requests == 5


def test_stats_count_requests_pages_faults_and_the_busiest_second(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.fail_next("500")
    for _ in range(4):
        api.get("/numbers", params={"workspace": WS})
    api.get("/elsewhere")
    stats = sim.stats
    assert (stats.requests, stats.pages_served, stats.faults_served) == (5, 3, {"500": 1})
    assert stats.max_requests_in_any_second == 5
    sim.reset_stats()
    assert sim.stats.requests == 0
    assert sim.stats.max_requests_in_any_second == 0


# --- mutations -----------------------------------------------------------------------------


def test_add_number_appends_to_the_end_of_the_order(sim: Simulator, api: httpx.Client) -> None:
    fresh = sim.new_number("GB", sid=False, is_available=False)
    sim.add_number(WS, fresh)
    page = get_page(api, limit=100)
    assert page["pagination"]["total_records"] == 46
    assert page["phone_numbers"][-1] == {"number": fresh.number, "sid": None, "is_available": False}


def test_markup_and_numbers_that_are_not_e164_are_served_verbatim(
    sim: Simulator, api: httpx.Client
) -> None:
    odd = [
        PhoneNumber("[/]+15550001", "[bold]x[/]", True),
        PhoneNumber("7166663572", None, False),
        PhoneNumber("+1" + "9" * 299, "[link=https://example.com]PN[/link]", True),
    ]
    for record in odd:
        sim.add_number(WS2, record)
    page = get_page(api, WS2, limit=100)
    assert page["phone_numbers"][-3:] == as_records(odd)
    assert page["pagination"]["total_records"] == 15


def test_a_workspace_id_with_markup_is_named_verbatim_in_the_400(api: httpx.Client) -> None:
    response = api.get("/numbers", params={"workspace": "[bold]ws[/]"})
    assert response.status_code == 400
    assert response.json()["detail"]["description"] == "Workspace [bold]ws[/] not found"


def test_remove_number_takes_it_out_of_the_listing(sim: Simulator, api: httpx.Client) -> None:
    gone = sim.numbers(WS)[3].number
    sim.remove_number(WS, gone)
    page = get_page(api, limit=100)
    assert page["pagination"]["total_records"] == 44
    assert gone not in numbers_of(page)


def test_move_number_leaves_one_workspace_and_joins_the_other_at_the_end(
    sim: Simulator, api: httpx.Client
) -> None:
    moved = sim.numbers(WS)[0]
    sim.move_number(moved.number, WS, WS2)
    assert moved.number not in numbers_of(get_page(api, WS, limit=100))
    assert get_page(api, WS2, limit=100)["phone_numbers"][-1] == as_records([moved])[0]


def test_set_available_and_set_sid_change_the_record_in_place(
    sim: Simulator, api: httpx.Client
) -> None:
    target = sim.numbers(WS)[5]
    sim.set_available(WS, target.number, not target.is_available)
    sim.set_sid(WS, target.number, None)
    record = get_page(api, limit=100)["phone_numbers"][5]
    assert record == {"number": target.number, "sid": None, "is_available": not target.is_available}
    sim.set_sid(WS, target.number, "PN" + "a" * 32)
    assert get_page(api, limit=100)["phone_numbers"][5]["sid"] == "PN" + "a" * 32


def test_clear_workspace_leaves_an_empty_listing_not_an_unknown_workspace(
    sim: Simulator, api: httpx.Client
) -> None:
    sim.clear_workspace(WS)
    page = get_page(api)
    assert page == {
        "pagination": {"total_records": 0, "limit": 20, "offset": 0},
        "phone_numbers": [],
    }
    assert sim.numbers(WS) == []
    assert WS in sim.workspace_ids()


def test_mutations_refuse_what_does_not_exist_or_already_exists(sim: Simulator) -> None:
    existing = sim.numbers(WS)[0]
    with pytest.raises(ValueError, match="already in workspace"):
        sim.add_number(WS2, existing)
    with pytest.raises(KeyError):
        sim.remove_number(WS2, existing.number)
    with pytest.raises(KeyError):
        sim.set_available("nope", existing.number, True)
    with pytest.raises(ValueError, match="already exists"):
        sim.add_workspace(WS)


# --- seeded data ---------------------------------------------------------------------------


def test_seeded_numbers_are_valid_unique_e164_of_the_requested_countries() -> None:
    simulator = Simulator(seed=3)
    countries = ("US", "GB", "DE", "FR")
    numbers = simulator.add_workspace(WS, 3000, countries=countries)
    numbers += simulator.add_workspace(WS2, 500, countries=("US",))
    numbers.append(simulator.new_number("DE"))
    assert len({p.number for p in numbers}) == len(numbers)
    for p in numbers:
        assert E164.match(p.number), p.number
        parsed = phonenumbers.parse(p.number)
        assert phonenumbers.is_valid_number(parsed), p.number
        assert phonenumbers.region_code_for_number(parsed) in countries
    assert {phonenumbers.region_code_for_number(phonenumbers.parse(p.number)) for p in numbers} == (
        set(countries)
    )


def test_seeded_sids_look_like_twilios_and_shares_are_respected() -> None:
    numbers = Simulator(seed=5).add_workspace(WS, 4000, available_share=0.6, custom_share=0.1)
    sids = [p.sid for p in numbers if p.sid is not None]
    assert all(SID.match(sid) for sid in sids)
    assert len(set(sids)) == len(sids)
    assert 0.07 < 1 - len(sids) / len(numbers) < 0.13
    assert 0.55 < sum(p.is_available for p in numbers) / len(numbers) < 0.65


def test_the_same_seed_gives_the_same_data_and_another_seed_does_not() -> None:
    def make(seed: int) -> list[PhoneNumber]:
        simulator = Simulator(seed=seed)
        simulator.add_workspace(WS, 200)
        return [*simulator.numbers(WS), simulator.new_number()]

    assert make(11) == make(11)
    assert make(11) != make(12)


def test_new_number_is_in_no_workspace() -> None:
    simulator = Simulator(seed=1)
    taken = {p.number for p in simulator.add_workspace(WS, 2000, countries=("US",))}
    fresh = [simulator.new_number("US") for _ in range(200)]
    assert not taken & {p.number for p in fresh}
    assert len({p.number for p in fresh}) == 200
    assert all(p.sid and SID.match(p.sid) and p.is_available for p in fresh)


@dataclass
class HugeWorkspace:
    simulator: Simulator
    numbers: list[PhoneNumber]
    cpu_seconds_to_make: float


@pytest.fixture(scope="module")
def huge() -> HugeWorkspace:
    """200,000 numbers in workspace "huge" beside 100 in "small" (made once: it takes a second)."""
    simulator = Simulator(seed=2)
    started = time.process_time()  # CPU time: other processes on the machine do not count
    numbers = simulator.add_workspace("huge", 200_000)
    cpu_seconds = time.process_time() - started
    simulator.add_workspace("small", 100)
    return HugeWorkspace(simulator, numbers, cpu_seconds)


def test_a_workspace_of_200_000_numbers_is_made_in_seconds(huge: HugeWorkspace) -> None:
    assert huge.cpu_seconds_to_make < 4
    assert len({p.number for p in huge.numbers}) == 200_000
    for p in huge.numbers[::400]:
        assert phonenumbers.is_valid_number(phonenumbers.parse(p.number)), p.number
    with huge.simulator, client(huge.simulator.base_url) as http:
        params = {"workspace": "huge", "limit": 1000, "offset": 199_500}
        last = http.get("/numbers", params=params)
    assert last.json()["response"]["phone_numbers"] == as_records(huge.numbers[199_500:])


def test_serving_a_page_costs_the_same_in_a_huge_workspace_as_in_a_small_one(
    huge: HugeWorkspace,
) -> None:
    def cpu_seconds_for_pages(http: httpx.Client, workspace: str) -> float:
        started = time.process_time()
        for offset in range(300):
            http.get("/numbers", params={"workspace": workspace, "limit": 5, "offset": offset})
        return time.process_time() - started

    with huge.simulator, client(huge.simulator.base_url) as http:
        cpu_seconds_for_pages(http, "huge")  # the first page builds the listing's cached view
        small = cpu_seconds_for_pages(http, "small")
        large = cpu_seconds_for_pages(http, "huge")
    assert large < 2 * small  # copying 200,000 records per page would cost 5 to 10 times more


def test_demo_simulator_makes_deterministic_synthflow_like_workspaces() -> None:
    first = demo_simulator(seed=4, workspaces=3, numbers_per_workspace=10)
    second = demo_simulator(seed=4, workspaces=3, numbers_per_workspace=10)
    ids = first.workspace_ids()
    assert len(ids) == 3
    assert all(re.fullmatch(r"\d{13}x\d{18}", workspace_id) for workspace_id in ids)
    assert ids == second.workspace_ids()
    assert [first.numbers(w) for w in ids] == [second.numbers(w) for w in ids]
    assert all(len(first.numbers(w)) == 10 for w in ids)
    assert demo_simulator(seed=5).workspace_ids() != ids


# --- serving -------------------------------------------------------------------------------


def test_stop_closes_open_connections_and_start_serves_again() -> None:
    simulator = Simulator()
    simulator.add_workspace(WS, 3)
    url = simulator.start()
    with client(url) as http:
        assert http.get("/numbers", params={"workspace": WS}).status_code == 200
        simulator.stop()
        with pytest.raises(httpx.TransportError):
            http.get("/numbers", params={"workspace": WS})
    with pytest.raises(RuntimeError):
        _ = simulator.base_url
    url = simulator.start()
    try:
        response = bare_get(
            f"{url}/numbers", params={"workspace": WS}, headers={"Authorization": "Bearer x"}
        )
        assert response.status_code == 200
    finally:
        simulator.stop()
    simulator.stop()  # a second stop is harmless


def test_serve_forever_reports_its_url_and_returns_on_stop() -> None:
    simulator = Simulator()
    simulator.add_workspace(WS, 3)
    ready: queue.Queue[str] = queue.Queue()
    thread = threading.Thread(target=simulator.serve_forever, kwargs={"on_ready": ready.put})
    thread.start()
    try:
        url = ready.get(timeout=5)
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v2", url)
        response = bare_get(
            f"{url}/numbers", params={"workspace": WS}, headers={"Authorization": "Bearer x"}
        )
        assert response.json()["response"]["pagination"]["total_records"] == 3
    finally:
        simulator.stop()
        thread.join(timeout=5)
    assert not thread.is_alive()
