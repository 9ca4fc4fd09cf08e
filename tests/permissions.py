"""Running the command where read-only means read-only, also for root.

Root writes into a read-only folder all the same (CAP_DAC_OVERRIDE), so a test that runs as
root (a container) would prove nothing about read-only places. `run_cli` here starts the
command without the two capabilities that bypass file permissions; as anyone else it is the
plain `tests.test_cli.run_cli`.
"""

import ctypes
import os
import subprocess

import tests.test_cli

LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here: the child after fork only calls it
PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def _obey_file_permissions() -> None:
    """In the child, before exec: drop the capabilities from the bounding set, so the
    command runs without them."""
    if os.geteuid() == 0:
        for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
            if LIBC.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
                raise OSError(ctypes.get_errno(), "could not drop a capability")


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return tests.test_cli.run_cli(*args, env=env, preexec_fn=_obey_file_permissions)
