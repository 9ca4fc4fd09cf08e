"""The `synthflow-numbers` command, run end to end as a user runs it: a subprocess.

Contract: results on stdout, messages on stderr, no stack trace without --debug; exit 0
only when every workspace succeeded; bad input exits non-zero with a message that names
the problem and the fix; the API key appears in no output and no file.
"""

import json
import os
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import httpx
import pytest

from pipelines.synthflow.simulator import Simulator
from pipelines.warehouse.connection import connect
from tests.conftest import TEST_KEY
from tests.history_cases import at, load_snapshot


def run_cli(
    *args: str, env: dict[str, str] | None = None, **popen: Any
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "pipelines.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=240,
        **popen,
    )


def start_cli(*args: str) -> subprocess.Popen:
    """The command started in the background, its output piped for the test to read."""
    return subprocess.Popen(
        [sys.executable, "-m", "pipelines.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stored(path: str) -> dict[str, set[tuple]]:
    with duckdb.connect(path, read_only=True) as con:
        rows = con.execute(
            "SELECT workspace_id, number, sid, is_available FROM synthflow.number_snapshots"
        ).fetchall()
    listing: dict[str, set[tuple]] = {}
    for workspace_id, *record in rows:
        listing.setdefault(workspace_id, set()).add(tuple(record))
    return listing


def expected(simulator) -> dict[str, set[tuple]]:
    return {
        wid: {(n.number, n.sid, n.is_available) for n in simulator.numbers(wid)}
        for wid in simulator.workspace_ids()
    }


def test_snapshot_stores_the_simulators_state_and_prints_a_summary(synthflow_env, simulator):
    result = run_cli("snapshot")
    assert result.returncode == 0, result.stderr
    assert "Snapshot summary" in result.stdout
    for workspace_id in simulator.workspace_ids():
        assert workspace_id in result.stdout
    assert stored(synthflow_env["SYNTHFLOW_DUCKDB_PATH"]) == expected(simulator)
    assert "Traceback" not in result.stderr


def test_snapshot_of_named_workspaces_only(synthflow_env, simulator):
    chosen = simulator.workspace_ids()[1]
    result = run_cli("snapshot", "--workspace", chosen)
    assert result.returncode == 0, result.stderr
    assert set(stored(synthflow_env["SYNTHFLOW_DUCKDB_PATH"])) == {chosen}


def test_a_failing_workspace_exits_1_names_it_and_the_rest_are_stored(synthflow_env, simulator):
    healthy, rejected, other = simulator.workspace_ids()
    simulator.break_workspace(rejected, "truncate")
    result = run_cli("snapshot")
    assert result.returncode == 1
    assert rejected in result.stderr
    assert "Traceback" not in result.stderr
    listing = stored(synthflow_env["SYNTHFLOW_DUCKDB_PATH"])
    assert set(listing) == {healthy, other}
    assert listing[healthy] == expected(simulator)[healthy]


def test_unknown_workspace_is_explained(synthflow_env):
    result = run_cli("snapshot", env={"SYNTHFLOW_WORKSPACES": "1700000000000x000000000000000000"})
    assert result.returncode == 1
    assert "1700000000000x000000000000000000" in result.stderr
    assert "400" in result.stderr and "Check the workspace ID" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_bad_config_file_is_refused_with_the_file_entry_and_fix(synthflow_env, tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("workspaces:\n  - id: abc\n    region: mars\nfetch:\n  page_size: 0\n")
    result = run_cli("snapshot", env={"SYNTHFLOW_CONFIG": str(config)})
    assert result.returncode == 2
    assert str(config) in result.stderr
    assert "region must be one of global, us, eu" in result.stderr
    assert "page_size" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_key_variable_is_named(synthflow_env):
    env = {k: v for k, v in os.environ.items() if k != "SYNTHFLOW_API_KEY"}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "snapshot"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2
    assert "SYNTHFLOW_API_KEY is not set" in result.stderr


def test_a_database_held_by_another_process_is_reported(synthflow_env, tmp_path):
    config = Path(synthflow_env["SYNTHFLOW_CONFIG"])
    config.write_text(config.read_text() + "database:\n  lock_timeout_s: 0.5\n")
    path = synthflow_env["SYNTHFLOW_DUCKDB_PATH"]
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()",
            path,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        result = run_cli("snapshot")
    finally:
        holder.communicate("", timeout=30)
    assert result.returncode != 0
    assert "in use by process" in (result.stdout + result.stderr)
    assert str(holder.pid) in (result.stdout + result.stderr)
    assert "Traceback" not in result.stderr


def test_report_and_rebuild_history_after_snapshots(synthflow_env, simulator):
    assert run_cli("snapshot").returncode == 0
    workspace_id = simulator.workspace_ids()[0]
    number = simulator.numbers(workspace_id)[0]
    simulator.set_available(workspace_id, number.number, not number.is_available)
    assert run_cli("snapshot").returncode == 0
    path = synthflow_env["SYNTHFLOW_DUCKDB_PATH"]
    query = "SELECT * FROM synthflow.number_changes ORDER BY ALL"
    with duckdb.connect(path, read_only=True) as con:
        before = con.execute(query).fetchall()
    rebuilt = run_cli("rebuild-history")
    assert rebuilt.returncode == 0, rebuilt.stderr
    with duckdb.connect(path, read_only=True) as con:
        assert con.execute(query).fetchall() == before
    report = run_cli("report")
    assert report.returncode == 0, report.stderr
    assert "Numbers now" in report.stdout
    assert ("assigned" if number.is_available else "released") in report.stdout


HISTORY_TABLES = ("number_history", "number_changes", "history_applied")


def test_rebuild_history_refuses_a_workspace_the_database_does_not_hold(synthflow_env):
    assert run_cli("snapshot").returncode == 0
    path = synthflow_env["SYNTHFLOW_DUCKDB_PATH"]
    tables = "SELECT * FROM synthflow.{} ORDER BY ALL"
    with duckdb.connect(path, read_only=True) as con:
        before = [con.execute(tables.format(t)).fetchall() for t in HISTORY_TABLES]

    result = run_cli("rebuild-history", "--workspace", "no-such-workspace")

    assert result.returncode == 2
    assert "workspace no-such-workspace: the database holds no snapshots" in result.stderr
    assert "Traceback" not in result.stderr
    with duckdb.connect(path, read_only=True) as con:
        assert [con.execute(tables.format(t)).fetchall() for t in HISTORY_TABLES] == before


COMMANDS = [
    "snapshot",
    "demo",
    "simulate",
    "report",
    "query",
    "export",
    "import",
    "rebuild-history",
    "maintain",
]


def test_maintain_checkpoints_a_stored_database_and_refuses_a_missing_one(tmp_path: Path):
    path = tmp_path / "numbers.duckdb"
    env = {"SYNTHFLOW_DUCKDB_PATH": str(path)}
    missing = run_cli("maintain", env=env)
    assert missing.returncode == 2 and "run `synthflow-numbers snapshot` first" in missing.stderr
    with connect(path) as con:
        load_snapshot(con, "s1", "w1", at(0), {"+14155550123": (True, None)})

    done = run_cli("maintain", env=env)

    assert done.returncode == 0 and "Checkpointed" in done.stdout, done.stderr
    with duckdb.connect(str(path), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM synthflow.number_history").fetchone() == (1,)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help_with_a_description_and_an_example(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0
    assert "usage: synthflow-numbers" in result.stdout
    assert f"example:\n  synthflow-numbers {command} " in result.stdout
    assert "SYNTHFLOW_DUCKDB_PATH" in result.stdout  # where the configuration comes from


def test_help_shows_the_defaults_of_options_that_have_one():
    def help_of(command: str) -> str:
        return " ".join(run_cli(command, "--help").stdout.split())  # unwrapped

    simulate = help_of("simulate")
    for default in ("(default: 8765)", "(default: 3)", "(default: 40)", "(default: none)"):
        assert default in simulate
    assert "(default: data/demo.duckdb)" in help_of("demo")
    assert "(default: 10)" in help_of("report")


COUNTS = "SELECT workspace_id, count(*) AS numbers FROM synthflow.number_snapshots GROUP BY 1"


def test_query_answers_in_a_table_csv_or_json(synthflow_env, simulator):
    assert run_cli("snapshot").returncode == 0
    counts = {wid: len(simulator.numbers(wid)) for wid in simulator.workspace_ids()}

    as_csv = run_cli("query", f"{COUNTS} ORDER BY 1", "--csv")
    assert as_csv.returncode == 0, as_csv.stderr
    assert as_csv.stdout.splitlines() == ["workspace_id,numbers"] + [
        f"{wid},{count}" for wid, count in sorted(counts.items())
    ]
    as_json = run_cli("query", "SELECT taken_at, row_count FROM synthflow.snapshots", "--json")
    assert as_json.returncode == 0, as_json.stderr
    records = json.loads(as_json.stdout)
    assert sorted(record["row_count"] for record in records) == sorted(counts.values())
    assert all(datetime.fromisoformat(record["taken_at"]).tzinfo for record in records)
    as_table = run_cli("query", COUNTS, env={"COLUMNS": "120"})
    assert as_table.returncode == 0, as_table.stderr
    assert all(wid in as_table.stdout for wid in counts)
    assert f"{len(counts)} rows" in as_table.stderr


def test_query_cannot_change_the_database_and_says_what_failed(synthflow_env, simulator):
    assert run_cli("snapshot").returncode == 0
    path = synthflow_env["SYNTHFLOW_DUCKDB_PATH"]
    before = stored(path)

    deleting = run_cli("query", "DELETE FROM synthflow.number_snapshots")
    misspelt = run_cli("query", "SELECT * FROM synthflow.number_snapshot")

    for result in (deleting, misspelt):
        assert result.returncode == 2
        assert "error: the query failed" in result.stderr and "Traceback" not in result.stderr
    assert "read-only" in deleting.stderr
    assert "SHOW ALL TABLES" in misspelt.stderr
    assert stored(path) == before


def test_query_waits_for_a_writer_and_says_so(synthflow_env, simulator):
    assert run_cli("snapshot").returncode == 0
    writer = duckdb.connect(synthflow_env["SYNTHFLOW_DUCKDB_PATH"])  # holds the file
    reading = start_cli("query", "SELECT 42 AS answer", "--csv")
    try:
        said = reading.stderr.readline()  # blocks until the command says it waits
        assert said.startswith("waiting for ") and f"process {os.getpid()}" in said
    finally:
        writer.close()
    out, _ = reading.communicate(timeout=120)
    assert reading.returncode == 0 and out.splitlines() == ["answer", "42"]


def test_report_waits_for_a_writer_and_says_so(synthflow_env):
    path = synthflow_env["SYNTHFLOW_DUCKDB_PATH"]
    with connect(Path(path)) as con:
        load_snapshot(con, "s1", "w1", at(0), {"+15550001": (True, None)})
    writer = duckdb.connect(path)  # holds the file
    reading = start_cli("report")
    try:
        said = reading.stderr.readline()  # blocks until the command says it waits
        assert said.startswith(f"waiting for {path}: process {os.getpid()}")
    finally:
        writer.close()
    out, _ = reading.communicate(timeout=120)
    assert reading.returncode == 0 and "+15550001" in out


HEAVY_MODULES = ("dagster", "duckdb", "pyarrow", "pandas", "httpx", "pydantic")
WHAT_HELP_LOADED = """
import sys
from pipelines.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
print(" ".join(sorted({name.split(".")[0] for name in sys.modules})))
"""


@pytest.mark.parametrize("argv", [["--help"], ["snapshot", "--help"], ["report", "--help"]])
def test_help_loads_none_of_the_heavy_libraries(argv):
    """`--help` answers at once: it imports neither Dagster nor the data and HTTP stacks."""
    result = subprocess.run(
        [sys.executable, "-c", WHAT_HELP_LOADED, *argv], capture_output=True, text=True
    )
    assert result.returncode == 0 and "usage: synthflow-numbers" in result.stdout, result.stderr
    loaded = set(result.stdout.splitlines()[-1].split())
    assert loaded.isdisjoint(HEAVY_MODULES), loaded & set(HEAVY_MODULES)


def test_demo_shows_every_kind_of_change(tmp_path):
    database = tmp_path / "demo.duckdb"
    result = run_cli("demo", "--database", str(database))
    assert result.returncode == 0, result.stderr
    for kind in ("added", "removed", "assigned", "released", "sid_changed"):
        assert kind in result.stdout
    assert "Numbers that moved between workspaces" in result.stdout
    with duckdb.connect(str(database), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM synthflow.number_moves").fetchone()[0] == 1
        names = con.execute("SELECT name FROM synthflow.workspaces ORDER BY name").fetchall()
    assert names == [("Acme Sales Europe",), ("Acme Support US",), ("Acme Trial",)]
    assert "Acme Trial" in result.stdout  # the emptied workspace, by its name


def test_the_key_appears_in_no_output_or_file(synthflow_env, simulator, tmp_path):
    simulator.break_workspace(simulator.workspace_ids()[0], "503")
    outputs = [run_cli("snapshot"), run_cli("--debug", "snapshot"), run_cli("report")]
    for result in outputs:
        assert TEST_KEY not in result.stdout + result.stderr
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert TEST_KEY.encode() not in path.read_bytes(), path


def test_a_wrong_base_path_is_a_404_that_names_the_fix(synthflow_env, simulator):
    wrong = simulator.base_url.removesuffix("/v2") + "/v9"
    result = run_cli("snapshot", env={"SYNTHFLOW_BASE_URL": wrong})
    assert result.returncode == 1
    assert "404" in result.stderr and "base URL ends in /v2" in result.stderr
    assert "Traceback" not in result.stderr


def test_an_html_page_from_a_proxy_is_reported_not_parsed(synthflow_env, simulator):
    broken = simulator.workspace_ids()[0]
    simulator.break_workspace(broken, "html")
    result = run_cli("snapshot")
    assert result.returncode == 1
    assert broken in result.stderr and "non-JSON answer (text/html" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_rejected_key_is_reported_with_the_fix(synthflow_env, tmp_path):
    workspace_id = "1700000000000x000000000000000042"
    with Simulator(api_keys={workspace_id: "the-accepted-key"}) as sim:
        sim.add_workspace(workspace_id, 5)
        result = run_cli(
            "snapshot",
            env={"SYNTHFLOW_BASE_URL": sim.base_url, "SYNTHFLOW_WORKSPACES": workspace_id},
        )
        config = tmp_path / "own-key.yaml"
        config.write_text(f"workspaces:\n  - id: {workspace_id}\n    api_key_env: ACME_KEY\n")
        own_key = run_cli(
            "snapshot",
            env={
                "SYNTHFLOW_BASE_URL": sim.base_url,
                "SYNTHFLOW_WORKSPACES": "",
                "SYNTHFLOW_CONFIG": str(config),
                "ACME_KEY": "another-wrong-key",
            },
        )
    assert result.returncode == 1
    assert "401" in result.stderr and "API key was refused" in result.stderr
    assert "set SYNTHFLOW_API_KEY to a valid key" in result.stderr
    assert TEST_KEY not in result.stderr + result.stdout
    assert "Traceback" not in result.stderr
    assert own_key.returncode == 1 and "set ACME_KEY to a valid key" in own_key.stderr


@pytest.mark.parametrize(
    ("flag", "value", "says"),
    [("--rate", "0", "above 0"), ("--page-cap", "0", "above 0"), ("--numbers", "-1", "0 or more")],
)
def test_simulate_refuses_a_count_or_rate_out_of_range_naming_the_flag(flag, value, says):
    result = run_cli("simulate", "--port", "0", flag, value)

    assert result.returncode == 2
    assert f"argument {flag}: must be {says}: {value}" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_accepts_the_key_it_prints_and_refuses_any_other():
    """So the wrong-key path (401 and its hint) can be tried by hand against `simulate`; its
    `export` lines stay whole however long, to be pasted as they are."""
    server = start_cli("simulate", "--port", "0", "--workspaces", "8")
    try:
        exports = dict(
            server.stdout.readline().strip().removeprefix("export ").split("=", 1) for _ in range(3)
        )
        assert len(exports["SYNTHFLOW_WORKSPACES"].split(",")) == 8
        base_url, key = exports["SYNTHFLOW_BASE_URL"], exports["SYNTHFLOW_API_KEY"]
        workspace = exports["SYNTHFLOW_WORKSPACES"].split(",")[0]
        url = f"{base_url}/numbers?workspace={workspace}"
        accepted = httpx.get(url, headers={"Authorization": f"Bearer {key}"})
        refused = httpx.get(url, headers={"Authorization": "Bearer some-other-key"})
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert accepted.status_code == 200
    assert refused.status_code == 401
    assert "Invalid API key" in refused.json()["detail"]["description"]


@pytest.mark.parametrize("argv", [["--debug", "report"], ["report", "--debug"]])
def test_debug_is_taken_before_or_after_the_command(argv, synthflow_env, tmp_path):
    """With --debug anywhere, a known failure shows its stack trace; without it, one line."""
    env = {"SYNTHFLOW_DUCKDB_PATH": str(tmp_path / "missing.duckdb")}
    debugged, plain = run_cli(*argv, env=env), run_cli("report", env=env)
    assert "Traceback" in debugged.stderr and "DatabaseUnusableError" in debugged.stderr
    assert plain.stderr.startswith("error:") and "Traceback" not in plain.stderr


def test_counts_in_messages_are_singular_or_plural_as_they_should_be(synthflow_env, tmp_path):
    """A one-page workspace is "in 1 page", not "in 1 pages"."""
    with Simulator(seed=3) as one_page:
        one_page.add_workspace("1700000000009x000000000000000009", 1)
        env = {
            "SYNTHFLOW_BASE_URL": one_page.base_url,
            "SYNTHFLOW_WORKSPACES": "1700000000009x000000000000000009",
        }
        result = run_cli("snapshot", env=env)
    assert result.returncode == 0, result.stderr
    assert ": 1 number in 1 page" in result.stderr
