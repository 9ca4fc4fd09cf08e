"""A server that answers slowly, wrongly or hugely costs bounded time and memory, and one
workspace at most.

Contract (shared/design.md, "What must always hold": every run ends): each request has a total
deadline, body included; an answer's body is capped after decompression; what a listing costs
grows with the records received, never with the total a server claims; an undecodable body or
a 200 whose `status` is not "ok" is a failed page of that workspace alone, retried, then named;
anything the server says is stripped of the key. Records are read tolerantly (a missing `sid`
is NULL) and oddities are loud (a number that is not E.164 is stored as given and reported).
A listing read when the clock is not after the workspace's newest snapshot is refused.

Everything runs against the simulator on loopback and a real DuckDB file.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import duckdb
import pytest

from pipelines.config import FetchSettings
from pipelines.synthflow.simulator import PhoneNumber, demo_simulator
from tests.conftest import TEST_KEY
from tests.test_faults import history_rows, snapshot, state, stored

FAST = FetchSettings(page_size=20, max_backoff_s=0.01, max_retries=2, timeout_s=0.5)


@pytest.fixture
def sim():
    with demo_simulator(seed=5, workspaces=2, numbers_per_workspace=60) as simulator:
        simulator.trickle_interval_s = 0.05  # a 2 kB page would take ~100 s
        simulator.gzip_bomb_bytes = 64 * 1024 * 1024
        yield simulator


def assert_fails_alone(sim, db: Path, kind: str, fetch: FetchSettings, says: str) -> None:
    """Break the first workspace with `kind`: it fails, named, saying `says`, storing nothing;
    the other is stored exactly; history is as it was before for the broken one."""
    broken, healthy = sim.workspace_ids()
    snapshot(sim, db, "run-1", fetch)
    before = [row for row in history_rows(db) if row[0] == broken]
    sim.break_workspace(broken, kind)
    failed, stored_ok = snapshot(sim, db, "run-2", fetch)
    assert not failed.succeeded and stored_ok.succeeded
    assert broken in failed.error and says in failed.error, failed.error
    assert TEST_KEY not in failed.error
    assert stored(db, healthy) == state(sim, healthy)
    assert [row for row in history_rows(db) if row[0] == broken] == before
    with duckdb.connect(str(db), read_only=True) as con:
        (runs,) = con.execute(
            "SELECT count(*) FROM synthflow.snapshots WHERE workspace_id = ?", [broken]
        ).fetchone()
    assert runs == 1


def test_a_body_that_trickles_in_times_out_by_the_total_deadline(sim, tmp_path):
    # Every byte comes well within the read timeout; only a deadline on the whole answer ends it.
    assert_fails_alone(sim, tmp_path / "db.duckdb", "trickle", FAST, "timed out")


def test_a_trickle_that_passes_is_retried_into_an_exact_snapshot(sim, tmp_path):
    target = sim.workspace_ids()[0]
    sim.fail_next("trickle", 1, workspace_id=target)
    outcomes = snapshot(sim, tmp_path / "db.duckdb", "run-1", FAST)
    assert [outcome.error for outcome in outcomes] == [None, None]
    assert outcomes[0].retries == 1
    assert stored(tmp_path / "db.duckdb", target) == state(sim, target)


def test_a_claimed_total_of_a_trillion_costs_a_few_requests_not_a_trillion(sim, tmp_path):
    broken = sim.workspace_ids()[0]
    fetch = FetchSettings(page_size=20, max_backoff_s=0.01, concurrency=4, listing_attempts=2)
    sim.break_workspace(broken, "lying_total")
    sim.reset_stats()
    outcomes = snapshot(sim, tmp_path / "db.duckdb", "run-1", fetch)
    assert "did not add up" in outcomes[0].error
    assert outcomes[1].succeeded
    # Per read: the first page, then at most one request per reader before an empty page
    # (offset past the real listing) or a moved total ends the read.
    healthy_pages = 3
    assert sim.stats.requests <= 2 * (1 + 4 * 3) + healthy_pages


def test_a_gzip_body_that_does_not_decompress_fails_its_workspace_alone(sim, tmp_path):
    assert_fails_alone(sim, tmp_path / "db.duckdb", "bad_gzip", FAST, "could not be decompressed")


def test_a_gzip_bomb_is_cut_off_at_the_answer_size_cap(sim, tmp_path):
    # A deadline far off, so what ends each answer is the cap, also on a busy machine.
    fetch = FAST.model_copy(update={"max_response_mb": 4.0, "timeout_s": 10.0})
    assert_fails_alone(sim, tmp_path / "db.duckdb", "gzip_bomb", fetch, "max_response_mb")


def test_a_200_whose_status_is_error_is_no_listing_and_removes_nothing(sim, tmp_path):
    assert_fails_alone(sim, tmp_path / "db.duckdb", "error_status", FAST, "malformed page")


def test_an_error_body_that_echoes_the_key_is_shown_without_it(sim, tmp_path):
    assert_fails_alone(sim, tmp_path / "db.duckdb", "echo_key", FAST, "[redacted]")


def test_an_error_body_too_deep_or_oddly_shaped_fails_its_workspace_alone(sim, tmp_path):
    # JSON nested 100,000 deep, then a validation list whose `loc` is a number, in turn.
    assert_fails_alone(sim, tmp_path / "db.duckdb", "odd_error", FAST, "HTTP 500")


def test_a_record_without_sid_is_stored_with_a_null_sid(sim, tmp_path):
    target = sim.workspace_ids()[0]
    sim.break_workspace(target, "missing_sid")
    outcomes = snapshot(sim, tmp_path / "db.duckdb", "run-1", FAST)
    assert all(outcome.succeeded for outcome in outcomes)
    expected = {(number, None, available) for number, _, available in state(sim, target)}
    assert stored(tmp_path / "db.duckdb", target) == expected


def test_a_number_that_is_not_e164_is_stored_as_given_and_reported(sim, tmp_path):
    target = sim.workspace_ids()[0]
    odd = ["7166663572", "+1" + "9" * 299]
    for number in odd:
        sim.add_number(target, PhoneNumber(number, None, True))
    outcomes = snapshot(sim, tmp_path / "db.duckdb", "run-1", FAST)
    assert outcomes[0].succeeded and sorted(outcomes[0].not_e164) == sorted(odd)
    assert outcomes[1].not_e164 == []
    assert {number for number, _, _ in stored(tmp_path / "db.duckdb", target)} >= set(odd)


def test_two_spellings_of_one_number_fail_that_workspace_alone(sim, tmp_path):
    """Distinct as the API wrote them, one number in E.164: the workspace fails, named; the
    other workspace, stored in the same transaction otherwise, is stored."""
    spelled, healthy = sim.workspace_ids()
    sim.add_number(spelled, PhoneNumber("+12125550123", None, True))
    sim.add_number(spelled, PhoneNumber("+1 212 555 0123", None, True))
    outcomes = snapshot(sim, tmp_path / "db.duckdb", "run-1", FAST)
    assert spelled in outcomes[0].error and "two spellings" in outcomes[0].error
    assert outcomes[1].succeeded
    assert stored(tmp_path / "db.duckdb", healthy) == state(sim, healthy)


def test_a_clock_that_stepped_back_files_nothing_behind_the_current_state(sim, tmp_path):
    db = tmp_path / "db.duckdb"
    late, _ = sim.workspace_ids()
    snapshot(sim, db, "run-1", FAST)
    with duckdb.connect(str(db)) as con:  # the first run's clock was an hour ahead
        con.execute(
            "UPDATE synthflow.snapshots SET taken_at = taken_at + ? WHERE workspace_id = ?",
            [timedelta(hours=1), late],
        )
    current_before = current_numbers(db, late)
    sim.clear_workspace(late)
    outcomes = snapshot(sim, db, "run-2", FAST)
    assert "clock" in outcomes[0].error and late in outcomes[0].error
    assert outcomes[1].succeeded
    assert current_numbers(db, late) == current_before


def current_numbers(db: Path, workspace_id: str) -> set[tuple]:
    with duckdb.connect(str(db), read_only=True) as con:
        return set(
            con.execute(
                "SELECT number, sid, is_available FROM synthflow.current_numbers "
                "WHERE workspace_id = ?",
                [workspace_id],
            ).fetchall()
        )
