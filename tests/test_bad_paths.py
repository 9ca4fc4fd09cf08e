"""Every command's bad paths, run as a user runs them: a subprocess.

Contract: a path that is missing, a folder, not a DuckDB file, a DuckDB file without the
synthflow tables (or, for `report` and `export`, without the views an older version did not
create), read-only, or a database another process holds; an output place that is a file,
read-only or in a missing folder; a port that is busy or no port at all: each ends in exit 2
and one line on stderr, `error: ...`, that says what to do, with no traceback, and leaves
every file and folder as it was (no byte, no mtime changed, nothing created).
"""

import importlib.util
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import duckdb
import pytest

from pipelines.config import DuckLake
from pipelines.warehouse.connection import DatabaseUnusableError, connect
from tests.permissions import run_cli

Fault = Callable[[Path], AbstractContextManager[dict[str, str]]]


def database(place: Path) -> Path:
    return place / "db" / "numbers.duckdb"


def a_synthflow_database(place: Path) -> None:
    with connect(database(place)):
        pass


@contextmanager
def nothing_there(place: Path) -> Iterator[dict[str, str]]:
    yield {}


@contextmanager
def a_folder(place: Path) -> Iterator[dict[str, str]]:
    database(place).mkdir()
    yield {}


@contextmanager
def not_duckdb(place: Path) -> Iterator[dict[str, str]]:
    database(place).write_text("number,sid\n+15550001,PN1\n")
    yield {}


@contextmanager
def without_the_tables(place: Path) -> Iterator[dict[str, str]]:
    with duckdb.connect(str(database(place))) as con:
        con.execute("CREATE TABLE notes (body VARCHAR)")
    yield {}


@contextmanager
def written_by_an_older_version(place: Path) -> Iterator[dict[str, str]]:
    """The synthflow tables of a version before the views `report` and `export` read."""
    a_synthflow_database(place)
    with duckdb.connect(str(database(place))) as con:
        con.execute("DROP VIEW synthflow.workspaces CASCADE")
    yield {}


@contextmanager
def a_read_only_folder(place: Path) -> Iterator[dict[str, str]]:
    a_synthflow_database(place)
    database(place).parent.chmod(0o555)
    yield {}


@contextmanager
def in_use(place: Path) -> Iterator[dict[str, str]]:
    """Another process holds the database open for writing."""
    a_synthflow_database(place)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import duckdb, sys; c = duckdb.connect(sys.argv[1]); print('held', flush=True); "
            "sys.stdin.read()",
            str(database(place)),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        yield {}
    finally:
        holder.communicate("", timeout=30)


@contextmanager
def valid_database(place: Path) -> Iterator[dict[str, str]]:
    a_synthflow_database(place)
    yield {}


@contextmanager
def out_is_a_file(place: Path) -> Iterator[dict[str, str]]:
    a_synthflow_database(place)
    (place / "out").write_text("notes\n")
    yield {}


@contextmanager
def out_is_a_folder(place: Path) -> Iterator[dict[str, str]]:
    a_synthflow_database(place)
    (place / "out").mkdir()
    yield {}


@contextmanager
def out_is_read_only(place: Path) -> Iterator[dict[str, str]]:
    a_synthflow_database(place)
    (place / "out").mkdir(mode=0o555)
    yield {}


@contextmanager
def a_strangers_table_folder(place: Path) -> Iterator[dict[str, str]]:
    a_synthflow_database(place)
    (place / "out" / "snapshots").mkdir(parents=True)
    (place / "out" / "snapshots" / "mine.csv").write_text("keep me\n")
    yield {}


@contextmanager
def a_busy_port(place: Path) -> Iterator[dict[str, str]]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        yield {"port": str(listener.getsockname()[1])}


def case(argv: list[str], fault: Fault, hint: str):
    """A case: the command line ({place}: the test's folder), what is wrong, a word of the fix."""
    name = " ".join(argv).replace("{place}/", "")
    return pytest.param(argv, fault, hint, id=f"{name}: {fault.__name__.replace('_', ' ')}")


AT_THE_DATABASE = "set SYNTHFLOW_DUCKDB_PATH"
READERS = (["report"], ["export", "{place}/out"], ["rebuild-history"])
CASES = [
    *(case(argv, nothing_there, "run `synthflow-numbers snapshot` first") for argv in READERS),
    *(case(argv, a_folder, AT_THE_DATABASE) for argv in READERS),
    *(case(argv, not_duckdb, AT_THE_DATABASE) for argv in READERS),
    *(case(argv, without_the_tables, AT_THE_DATABASE) for argv in READERS),
    case(["report"], written_by_an_older_version, "bring it up to date"),
    case(["export", "{place}/out"], written_by_an_older_version, "bring it up to date"),
    case(["rebuild-history"], a_read_only_folder, "make both writable"),
    case(["report"], in_use, "lock_timeout_s"),
    case(["rebuild-history"], in_use, "lock_timeout_s"),
    case(["snapshot"], a_folder, AT_THE_DATABASE),
    case(["snapshot"], not_duckdb, AT_THE_DATABASE),
    case(["snapshot"], a_read_only_folder, "make both writable"),
    case(["report", "--html", "{place}/missing/report.html"], valid_database, "folder that exists"),
    case(["report", "--html", "{place}/out"], out_is_a_folder, "name a file"),
    case(["report", "--html", "{place}/out/report.html"], out_is_read_only, "is writable"),
    case(["export", "{place}/out"], out_is_a_file, "export to a new folder"),
    case(["export", "{place}/out"], out_is_read_only, "Make the folder writable"),
    case(["export", "{place}/missing/out"], valid_database, "create it"),
    case(["export", "{place}/out"], a_strangers_table_folder, "move it away"),
    case(["demo", "--database", "{place}/db/numbers.duckdb"], a_folder, AT_THE_DATABASE),
    case(["demo", "--database", "{place}/db/numbers.duckdb"], not_duckdb, AT_THE_DATABASE),
    case(["simulate", "--port", "{port}"], a_busy_port, "pick another --port"),
    case(["simulate", "--port", "70000"], nothing_there, "give 1-65535"),
    case(["simulate", "--port", "-1"], nothing_there, "give 1-65535"),
]


def everything_under(place: Path) -> dict[str, tuple]:
    """Each path under `place` with its mode, mtime and (for a file) its bytes."""
    return {
        str(path.relative_to(place)): (
            path.lstat().st_mode,
            path.lstat().st_mtime_ns,
            path.read_bytes() if path.is_file() else None,
        )
        for path in place.rglob("*")
    }


@pytest.fixture
def place(synthflow_env: dict[str, str], tmp_path: Path) -> Iterator[Path]:
    """A folder for the case, the database at db/numbers.duckdb in it, a short lock wait."""
    config = Path(synthflow_env["SYNTHFLOW_CONFIG"])
    config.write_text(config.read_text() + "database:\n  lock_timeout_s: 0.2\n")
    database(tmp_path).parent.mkdir()
    yield tmp_path
    for folder in (tmp_path / "db", tmp_path / "out"):
        if folder.is_dir():
            folder.chmod(0o755)  # so that pytest can remove it, also as a user that is not root


@pytest.mark.parametrize(("argv", "fault", "hint"), CASES)
def test_a_bad_path_ends_in_one_line_with_the_fix_and_changes_nothing(
    place: Path, argv: list[str], fault: Fault, hint: str
) -> None:
    with fault(place) as values:
        before = everything_under(place)
        result = run_cli(
            *(arg.format(place=place, **values) for arg in argv),
            env={"SYNTHFLOW_DUCKDB_PATH": str(database(place))},
        )
        after = everything_under(place)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    *waiting, error = result.stderr.splitlines()
    assert error.startswith("error: ") and hint in error, result.stderr
    assert len(waiting) <= 1 and all(line.startswith("waiting for ") for line in waiting)
    assert after == before


@pytest.mark.skipif(
    importlib.util.find_spec("duckdb_extensions") is not None,
    reason="checks the refusal where the ducklake extra is missing",
)
def test_without_the_extra_a_ducklake_is_refused_with_how_to_install_it(tmp_path: Path) -> None:
    lake = DuckLake(catalog="dbname=synthflow host=127.0.0.1", data_path=str(tmp_path))

    with pytest.raises(DatabaseUnusableError, match="uv sync --extra ducklake"), connect(lake):
        pass
