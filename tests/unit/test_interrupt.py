"""Ctrl-c stops a run whichever of the process's threads the kernel hands the signal to."""

import asyncio
import signal
import threading
import time

import pytest

from selfcorrect import interrupt


def _sigint_on_another_thread(after: float) -> threading.Thread:
    """A thread that sends SIGINT to itself: the signal is caught on it, not on the main thread."""
    def send():
        time.sleep(after)
        signal.pthread_kill(threading.get_ident(), signal.SIGINT)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def test_a_sigint_caught_on_another_thread_cancels_the_run_and_its_cleanup_runs():
    cleaned = []

    async def waits_on_a_server_that_hangs():
        try:
            await asyncio.sleep(30)  # select() with nothing else to wake it
        finally:
            cleaned.append(True)

    _sigint_on_another_thread(0.3)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupt.run(waits_on_a_server_that_hangs())
    assert time.monotonic() - started < 5 and cleaned == [True]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # put back


def test_a_second_sigint_stops_a_cleanup_that_hangs():
    async def cleanup_hangs():
        try:
            await asyncio.sleep(30)
        finally:
            _sigint_on_another_thread(0.2)
            await asyncio.sleep(30)

    _sigint_on_another_thread(0.2)
    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        interrupt.run(cleanup_hangs())
    assert time.monotonic() - started < 5


def test_a_run_that_ends_returns_its_value_and_its_own_cancel_is_not_a_ctrl_c():
    async def value():
        return 7

    assert interrupt.run(value()) == 7

    async def cancelled():
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        interrupt.run(cancelled())
