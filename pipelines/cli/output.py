"""What every command writes with: stdout for results, stderr for people, and its own error."""

import sys

from rich.console import Console

from pipelines.user_errors import UserError

# Piped output is not cut to 80 columns: tables stay whole for scripts and logs.
stdout = Console(width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


class CommandError(UserError):
    """A failure of the command itself (an output it cannot write, a port it cannot use)."""


def count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"
