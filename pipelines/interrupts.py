"""SIGINT and SIGTERM end a run: Ctrl-C, and what systemd, Docker and Kubernetes send first.

Both become `Interrupted`, a KeyboardInterrupt that remembers its signal, so every layer that
already stops cleanly on Ctrl-C (asyncio's cancellation, DuckDB's rollback, Dagster marking the
run failed) stops the same way on SIGTERM, and the command exits 128 + the signal's number.
While listings are read, the event loop takes both signals itself (`cancel_on_signals`): an
exception raised at a random point inside asyncio's socket code could be taken for a broken
connection and retried away.
"""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Awaitable
from types import FrameType
from typing import TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal asked the run to end."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def raise_interrupted(signum: int, _frame: FrameType | None) -> None:
    """A signal handler: `Interrupted` wherever Python is."""
    raise Interrupted(signum)


def end_on_signals() -> None:
    """Make SIGINT and SIGTERM raise `Interrupted` in this process (the main thread only)."""
    for signum in SIGNALS:
        signal.signal(signum, raise_interrupted)


async def cancel_on_signals(work: Awaitable[T]) -> T:
    """Await `work`; SIGINT or SIGTERM cancels it, then raises `Interrupted`.

    Outside the main thread, where no signal arrives, it simply awaits. The handlers in place
    before (Dagster's, or the command's) are put back afterwards.
    """
    if threading.current_thread() is not threading.main_thread():
        return await work
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    received: list[int] = []

    def cancel(signum: int) -> None:
        if not received:
            received.append(signum)
            task.cancel()

    previous = {signum: signal.getsignal(signum) for signum in SIGNALS}
    for signum in SIGNALS:
        loop.add_signal_handler(signum, cancel, signum)
    try:
        return await work
    except asyncio.CancelledError:
        if received:
            raise Interrupted(received[0]) from None
        raise
    finally:
        for signum, handler in previous.items():
            loop.remove_signal_handler(signum)
            signal.signal(signum, handler)
