"""Data out: Parquet export by workspace and date, and the self-contained HTML report.

Contract: `export DIR` writes snapshots, history and changes as Hive-partitioned Parquet
(`workspace_id=…/date=…`) that DuckDB reads back to exactly the stored rows; `report --html
FILE` writes one page with the utilization chart embedded and every report table, needing
no network to view.
"""

import duckdb
import pytest

from tests.test_cli import run_cli

TABLES = ("snapshots", "number_snapshots", "number_history", "number_changes")


@pytest.fixture
def two_snapshots(synthflow_env, simulator):
    assert run_cli("snapshot").returncode == 0
    workspace_id = simulator.workspace_ids()[0]
    for number in simulator.numbers(workspace_id)[:3]:
        simulator.set_available(workspace_id, number.number, not number.is_available)
    simulator.remove_number(workspace_id, simulator.numbers(workspace_id)[5].number)
    assert run_cli("snapshot").returncode == 0
    return synthflow_env["SYNTHFLOW_DUCKDB_PATH"]


def test_export_reads_back_to_the_same_rows(two_snapshots, tmp_path):
    out = tmp_path / "export"
    result = run_cli("export", str(out))
    assert result.returncode == 0, result.stderr
    with duckdb.connect(two_snapshots, read_only=True) as con:
        for table in TABLES:
            columns = [row[0] for row in con.execute(f"DESCRIBE synthflow.{table}").fetchall()]
            listed = ", ".join(columns)
            exported = (
                f"SELECT {listed} FROM read_parquet('{out}/{table}/**/*.parquet', "
                "hive_partitioning = true, hive_types_autocast = false)"
            )
            stored = f"SELECT {listed} FROM synthflow.{table}"
            assert con.execute(f"SELECT count(*) FROM ({exported})").fetchone()[0] > 0
            for left, right in ((exported, stored), (stored, exported)):
                difference = con.execute(f"SELECT count(*) FROM ({left} EXCEPT ALL {right})")
                assert difference.fetchone()[0] == 0, table
        dates = {p.name for p in (out / "number_changes").glob("workspace_id=*/date=*")}
        assert dates and all(name.startswith("date=") for name in dates)


def test_html_report_is_one_self_contained_page(two_snapshots, tmp_path):
    page = tmp_path / "report.html"
    result = run_cli("report", "--html", str(page))
    assert result.returncode == 0, result.stderr
    text = page.read_text()
    assert '<img alt="assigned share per workspace over time" src="data:image/png;base64,' in text
    for heading in ("Current inventory", "Latest changes", "Utilization per snapshot", "moved"):
        assert heading in text
    assert "released" in text or "assigned" in text
    assert "<script" not in text and 'src="http' not in text and "href=" not in text
