"""A throwaway PostgreSQL server for the deployment tests, from Debian's `postgresql` package.

`postgres_server` starts a fresh cluster in a temporary folder, listening on a free loopback
port only (no shared socket folder, no system service), with password authentication over
TCP, and stops and deletes it when the module's tests are done, also when they fail. Tests
that need it carry `requires_postgres`, which skips them with the reason when the server
programs are not installed; `scripts/ci-services` installs them so CI always runs them.

PostgreSQL refuses to run as root: as root, the cluster belongs to the `postgres` system user
(which the Debian package creates) and its programs run through `runuser`.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg2
import pytest

__all__ = ["PostgresServer", "postgres_server", "requires_postgres"]

USER = "dagster"
PASSWORD = "throwaway-test-password"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30


def postgres_bin_dir() -> Path | None:
    """The newest installed PostgreSQL server programs (initdb and pg_ctl), or None."""
    candidates = sorted(
        (Path(path) for path in glob.glob("/usr/lib/postgresql/*/bin")),
        key=lambda path: int(path.parent.name) if path.parent.name.isdigit() else 0,
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).resolve().parent)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "pg_ctl").is_file():
            return folder
    return None


def _missing_reason() -> str | None:
    if postgres_bin_dir() is None:
        return (
            "PostgreSQL server programs not found (no initdb/pg_ctl under "
            "/usr/lib/postgresql/*/bin): run scripts/ci-services as root, or "
            "apt-get install postgresql"
        )
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return "running as root but there is no `postgres` user to own the test cluster"
        if shutil.which("runuser") is None:
            return "running as root but `runuser` is missing to start PostgreSQL as `postgres`"
    return None


MISSING_REASON = _missing_reason()
requires_postgres = pytest.mark.skipif(MISSING_REASON is not None, reason=MISSING_REASON or "")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class PostgresServer:
    """A running throwaway server; connect over TCP with `user` and `password`."""

    host: str
    port: int
    user: str
    password: str

    def connect(self, db_name: str = "postgres"):
        return psycopg2.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            dbname=db_name,
            connect_timeout=10,
        )

    def create_database(self, db_name: str) -> str:
        con = self.connect()
        try:
            con.autocommit = True
            with con.cursor() as cur:
                cur.execute(f'CREATE DATABASE "{db_name}"')  # a name the test chose, not input
        finally:
            con.close()
        return db_name

    def dagster_env(self, db_name: str) -> dict[str, str]:
        """The variables `deploy/dagster.yaml` reads its PostgreSQL connection from."""
        return {
            "DAGSTER_PG_USERNAME": self.user,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_HOST": self.host,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_DB": db_name,
        }


class _Cluster:
    """initdb, pg_ctl start/stop, as `postgres` when we are root."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.as_root = os.geteuid() == 0
        # Not under pytest's tmp_path: as root that folder is 0700 and `postgres` cannot enter.
        self.base = Path(tempfile.mkdtemp(prefix="synthflow-pg-"))
        self.data = self.base / "data"
        self.log = self.base / "server.log"
        if self.as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(self.base, owner.pw_uid, owner.pw_gid)

    def run(self, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
        command = [str(self.bin_dir / args[0]), *args[1:]]
        if self.as_root:
            command = ["runuser", "-u", "postgres", "--", *command]
        return subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.base,
            env={**os.environ, "LC_ALL": "C"},
            check=False,
        )

    def write_as_owner(self, name: str, text: str) -> Path:
        path = self.base / name
        path.write_text(text)
        if self.as_root:
            owner = pwd.getpwnam("postgres")
            os.chown(path, owner.pw_uid, owner.pw_gid)
        path.chmod(0o600)
        return path

    def init(self) -> None:
        pwfile = self.write_as_owner("pwfile", PASSWORD + "\n")
        done = self.run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            USER,
            f"--pwfile={pwfile}",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--no-locale",
            "--encoding=UTF8",
            "--no-sync",
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{done.stdout}\n{done.stderr}")

    def start(self, port: int) -> bool:
        options = (
            f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.base} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        done = self.run(
            "pg_ctl",
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            str(START_TIMEOUT_S),
            "start",
            timeout=START_TIMEOUT_S + 10,
        )
        return done.returncode == 0

    def stop(self) -> None:
        try:
            done = self.run(
                "pg_ctl",
                "-D",
                str(self.data),
                "-m",
                "immediate",
                "-w",
                "-t",
                str(STOP_TIMEOUT_S),
                "stop",
                timeout=STOP_TIMEOUT_S + 10,
            )
            stopped = done.returncode == 0
        except subprocess.TimeoutExpired:
            stopped = False
        if not stopped:
            self._kill_postmaster()

    def _kill_postmaster(self) -> None:
        pid_file = self.data / "postmaster.pid"
        with contextlib.suppress(OSError, ValueError, IndexError):
            pid = int(pid_file.read_text().splitlines()[0])
            os.kill(pid, signal.SIGKILL)

    def server_log(self) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_text()[-4000:]
        return ""

    def remove(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a fresh server on a free loopback port; stop and delete it on exit."""
    bin_dir = postgres_bin_dir()
    if MISSING_REASON is not None or bin_dir is None:
        pytest.skip(MISSING_REASON or "PostgreSQL is not installed")
    cluster = _Cluster(bin_dir)
    try:
        cluster.init()
        for _ in range(3):  # another process may take the free port before the server binds it
            port = free_port()
            if cluster.start(port):
                break
        else:
            raise RuntimeError(f"PostgreSQL did not start:\n{cluster.server_log()}")
        yield PostgresServer(host="127.0.0.1", port=port, user=USER, password=PASSWORD)
    finally:
        cluster.stop()
        cluster.remove()


@pytest.fixture(scope="module")
def postgres_server() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL server for the test module; each test makes its own database."""
    with running_postgres() as server:
        yield server
