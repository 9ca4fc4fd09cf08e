"""SIGINT and SIGTERM (Ctrl-C; what systemd, Docker, Kubernetes send) raise `Interrupted`, a
KeyboardInterrupt, so every layer that stops cleanly on Ctrl-C stops the same way on SIGTERM."""

import asyncio
import signal
import threading
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")
SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """A signal asked the run to end; the message is the signal's name."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.exit_status = 128 + signum
        super().__init__(signal.Signals(signum).name)


def end_on_signals() -> None:
    """Make SIGINT and SIGTERM raise `Interrupted` in this process (the main thread only)."""

    def interrupt(signum: int, _frame: object) -> None:
        raise Interrupted(signum)

    for signum in SIGNALS:
        signal.signal(signum, interrupt)


async def cancel_on_signals(work: Awaitable[T]) -> T:
    """Await `work`; the first SIGINT or SIGTERM cancels it, then raises `Interrupted` (raised in
    asyncio's socket code, it could pass for a broken connection and be retried away)."""
    if threading.current_thread() is not threading.main_thread():  # no signal arrives there
        return await work
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
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
