"""Dagster's long-running processes (webserver, daemon, code server) as test subprocesses.

Each process starts in its own session at the project root, writes its output to a log file,
and is ended with its whole process group (code servers and run workers included) when the
`with` block exits, also when a test fails. `wait_until` is the only way tests wait: it polls
with a deadline and fails with what it was waiting for and the process logs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

PROJECT_ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
T = TypeVar("T")

# Variables of the developer's shell that would point the processes elsewhere.
_INHERITED_DROPPED = ("DAGSTER_", "SYNTHFLOW_")


def clean_environment(extra: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without any DAGSTER_*/SYNTHFLOW_* variable, plus `extra`."""
    env = {
        name: value for name, value in os.environ.items() if not name.startswith(_INHERITED_DROPPED)
    }
    env.update(extra)
    return env


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log_tail(self, chars: int = 6000) -> str:
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-chars:]
        return ""

    def ensure_running(self) -> None:
        if self.process.poll() is not None:
            pytest.fail(
                f"{self.name} exited with code {self.process.returncode}:\n{self.log_tail()}"
            )

    def stop(self) -> None:
        """SIGTERM to the whole group, then SIGKILL to whatever is left after 10 s."""
        try:
            group = os.getpgid(self.process.pid)
        except ProcessLookupError:
            group = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        # Children (code servers, run workers) may outlive the leader: end the group for good.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


@contextlib.contextmanager
def service(
    name: str, command: list[str], env: Mapping[str, str], log_dir: Path
) -> Iterator[Service]:
    """Run `command` at the project root in a new session; end its process group on exit."""
    log_path = log_dir / f"{name}.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            cwd=PROJECT_ROOT,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    running = Service(name, process, log_path)
    try:
        yield running
    finally:
        running.stop()


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout_s: float,
    what: str,
    services: tuple[Service, ...] = (),
    interval_s: float = 1.0,
) -> T:
    """Call `probe` until it returns something other than None; fail after `timeout_s`.

    The services are checked on every round, so a crashed process fails the test at once
    with its log instead of after the whole timeout.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        for running in services:
            running.ensure_running()
        result = probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {s.name} ---\n{s.log_tail()}" for s in services)
            pytest.fail(f"gave up after {timeout_s:.0f} s waiting for {what}\n{logs}")
        time.sleep(interval_s)
