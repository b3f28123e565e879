"""Running a coroutine so that ctrl-c always stops it: `run(coro)` in place of `asyncio.run`.

Why not asyncio.run's own ctrl-c: it installs SIGINT as a plain Python signal handler. The
kernel hands a process's SIGINT to any of its threads that does not block it (here: rich's
refresh thread, the default executor's worker that resolves addresses), and a Python handler
runs only when the main thread next executes bytecode. The main thread was asleep in the
event loop's select() with no timeout, waiting on a server that hangs: nothing woke it, the
handler never ran, and the run went on for as long as the server kept it waiting (the ctrl-c
test failed so in full-suite runs; sending SIGINT to one of the process's other threads
reproduces it every time). `loop.add_signal_handler` also sets the signal wakeup fd: whichever
thread catches the signal writes a byte to the loop's self-pipe, select() returns, and the
loop runs the handler.

The first ctrl-c cancels the main task, whose cleanup runs (a run records where it stopped),
then KeyboardInterrupt is raised; a second ctrl-c raises KeyboardInterrupt at once."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    if threading.current_thread() is not threading.main_thread():
        return asyncio.run(coro)  # signals are the main thread's business
    interrupts = 0
    main: asyncio.Task | None = None

    async def tracked() -> T:
        nonlocal main
        main = asyncio.current_task()
        return await coro

    def on_sigint() -> None:
        nonlocal interrupts
        interrupts += 1
        if interrupts == 1 and main is not None and not main.done():
            main.cancel()
        else:
            raise KeyboardInterrupt

    with asyncio.Runner() as runner:
        loop = runner.get_loop()
        loop.add_signal_handler(signal.SIGINT, on_sigint)
        try:
            return runner.run(tracked())
        except asyncio.CancelledError:
            if interrupts:
                raise KeyboardInterrupt from None
            raise
        finally:
            loop.remove_signal_handler(signal.SIGINT)
