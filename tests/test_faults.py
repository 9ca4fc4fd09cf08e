"""Every simulator fault switch, through the whole snapshot path into a real warehouse (a DuckDB
file; on scripts/test's DuckLake run, a DuckLake).

Contract: each workspace ends in an exact snapshot (equal to the simulator's state) or in a
clean failure of that workspace alone, with nothing stored and no history changed; never a
partial snapshot, never a spurious `removed`.
"""

from pathlib import Path

import pytest

from pipelines.config import DuckLake, FetchSettings, Workspace
from pipelines.snapshot import WorkspaceOutcome, take_snapshots
from pipelines.synthflow.simulator import FAULT_KINDS, Simulator, demo_simulator
from pipelines.warehouse.connection import connect
from tests.conftest import ON_DUCKLAKE, TEST_KEY

FAST = FetchSettings(page_size=20, max_backoff_s=0.01, max_retries=4, timeout_s=0.5)
# Pages the API may send as they are: extra fields are ignored, a missing sid is NULL.
TOLERATED = ("extra_fields", "missing_sid")
FAULTS = [kind for kind in FAULT_KINDS if kind not in TOLERATED]
# A page that claims another total is well-formed: its read is read again, not the page.
NOT_RETRIED_AS_A_PAGE = ("lying_total",)


@pytest.fixture
def sim():
    with demo_simulator(seed=11, workspaces=2, numbers_per_workspace=90, slow_s=1.0) as simulator:
        yield simulator


def snapshot(
    sim: Simulator, db: Path | DuckLake, run_id: str, fetch=FAST
) -> list[WorkspaceOutcome]:
    workspaces = [
        Workspace(id=wid, name=None, base_url=sim.base_url, api_key_env="UNUSED")
        for wid in sim.workspace_ids()
    ]
    return take_snapshots(
        workspaces,
        api_key=lambda _: TEST_KEY,
        fetch=fetch,
        connect=lambda: connect(db),
        run_id=run_id,
    )


def stored(db: Path | DuckLake, workspace_id: str) -> set[tuple]:
    with connect(db, read_only=True) as con:
        return set(
            con.execute(
                "SELECT number, sid, is_available FROM synthflow.number_snapshots "
                "WHERE workspace_id = ? AND snapshot_id = (SELECT max_by(snapshot_id, taken_at) "
                "FROM synthflow.snapshots WHERE workspace_id = ?)",
                [workspace_id, workspace_id],
            ).fetchall()
        )


def history_rows(db: Path | DuckLake) -> list[tuple]:
    with connect(db, read_only=True) as con:
        return con.execute(
            "SELECT * FROM synthflow.number_history UNION ALL "
            "SELECT workspace_id, number, NULL, change_type, changed_at, NULL, NULL "
            "FROM synthflow.number_changes ORDER BY ALL"
        ).fetchall()


def state(sim: Simulator, workspace_id: str) -> set[tuple]:
    return {(n.number, n.sid, n.is_available) for n in sim.numbers(workspace_id)}


# On the DuckLake run, the kinds that reach the warehouse differently: a page retried, a read
# read again, a page with more than the schema. Every kind is read by the same code whatever the
# warehouse, and the file run takes each one.
PASSING = ["500", "lying_total", "extra_fields"] if ON_DUCKLAKE else [*FAULTS, "extra_fields"]
PERSISTENT = ["500", "lying_total"] if ON_DUCKLAKE else FAULTS


@pytest.mark.parametrize("kind", PASSING)
def test_a_passing_fault_is_retried_into_an_exact_snapshot(sim, warehouse, kind):
    target = sim.workspace_ids()[0]
    sim.fail_next(kind, 3, workspace_id=target)
    outcomes = snapshot(sim, warehouse, "run-1")
    assert all(outcome.succeeded for outcome in outcomes), [o.error for o in outcomes]
    for workspace_id in sim.workspace_ids():
        assert stored(warehouse, workspace_id) == state(sim, workspace_id)
    if kind in FAULTS and kind not in NOT_RETRIED_AS_A_PAGE:
        assert outcomes[0].retries >= 3


@pytest.mark.parametrize("kind", PERSISTENT)
def test_a_persistent_fault_fails_that_workspace_alone_and_changes_no_history(sim, warehouse, kind):
    db = warehouse
    broken, healthy = sim.workspace_ids()
    snapshot(sim, db, "run-1")
    history_before = history_rows(db)
    sim.break_workspace(broken, kind)
    outcomes = snapshot(sim, db, "run-2")
    assert not outcomes[0].succeeded and outcomes[1].succeeded
    assert broken in outcomes[0].error
    assert TEST_KEY not in outcomes[0].error
    with connect(db, read_only=True) as con:
        runs = con.execute(
            "SELECT workspace_id, count(*) FROM synthflow.snapshots GROUP BY ALL ORDER BY ALL"
        ).fetchall()
    assert dict(runs) == {broken: 1, healthy: 2}
    assert history_rows(db) == history_before


def test_a_silently_capped_page_size_still_gives_everything(warehouse):
    with demo_simulator(seed=2, workspaces=1, numbers_per_workspace=95, page_size_cap=7) as sim:
        outcomes = snapshot(sim, warehouse, "run-1")
        workspace_id = sim.workspace_ids()[0]
        assert stored(warehouse, workspace_id) == state(sim, workspace_id)
        assert outcomes[0].snapshot.page_count == 14


def test_numbers_changing_while_paging_are_read_again(sim, warehouse):
    target = sim.workspace_ids()[0]
    sim.churn_while_paging(target, pages=2)
    outcomes = snapshot(sim, warehouse, "run-1")
    assert outcomes[0].succeeded
    assert stored(warehouse, target) == state(sim, target)


def test_numbers_that_never_stop_changing_fail_the_workspace_with_no_removals(sim, warehouse):
    db = warehouse
    target = sim.workspace_ids()[0]
    snapshot(sim, db, "run-1")
    before = history_rows(db)
    sim.churn_while_paging(target)
    outcomes = snapshot(sim, db, "run-2")
    assert not outcomes[0].succeeded
    assert "did not add up" in outcomes[0].error
    assert history_rows(db) == before


def test_the_same_number_on_two_pages_is_read_again(sim, warehouse):
    target = sim.workspace_ids()[0]
    sim.duplicate_across_pages(target, count=1)
    outcomes = snapshot(sim, warehouse, "run-1")
    assert outcomes[0].succeeded
    assert stored(warehouse, target) == state(sim, target)


def test_a_server_rate_limit_is_survived(warehouse):
    with demo_simulator(
        seed=5, workspaces=2, numbers_per_workspace=200, requests_per_second=30
    ) as sim:
        fetch = FAST.model_copy(update={"requests_per_second": 100.0, "max_retries": 8})
        outcomes = snapshot(sim, warehouse, "run-1", fetch=fetch)
        assert all(outcome.succeeded for outcome in outcomes)
        for workspace_id in sim.workspace_ids():
            assert stored(warehouse, workspace_id) == state(sim, workspace_id)


def test_a_rejected_key_fails_the_workspace_at_once_and_says_so(warehouse):
    workspace_id = "1700000000000x000000000000000001"
    with Simulator(api_keys={workspace_id: "the-only-accepted-key"}) as sim:
        sim.add_workspace(workspace_id, 10)
        outcomes = snapshot(sim, warehouse, "run-1")
        assert "401" in outcomes[0].error and "API key was refused" in outcomes[0].error
        assert outcomes[0].retries == 0
        assert TEST_KEY not in outcomes[0].error


def test_faults_combined_in_one_read_still_give_an_exact_snapshot(warehouse):
    """Latency, a capped page size, 5xx, a dropped connection, a truncated body, a 429 with an
    absurd Retry-After and numbers changing mid-listing, all in one run."""
    with demo_simulator(
        seed=8, workspaces=2, numbers_per_workspace=120, latency_s=0.005, page_size_cap=15
    ) as sim:
        target, other = sim.workspace_ids()
        sim.fail_next("503", 2, workspace_id=target)
        sim.fail_next("drop", 1, workspace_id=target)
        sim.fail_next("truncate", 1, workspace_id=other)
        sim.fail_next("429", 1, workspace_id=other, retry_after="86400")
        sim.fail_next("missing_field", 1, workspace_id=other)
        sim.churn_while_paging(target, pages=1)
        outcomes = snapshot(sim, warehouse, "run-1")
        assert all(outcome.succeeded for outcome in outcomes), [o.error for o in outcomes]
        for workspace_id in (target, other):
            assert stored(warehouse, workspace_id) == state(sim, workspace_id)
