"""Importing llama-cpp-python, and routing llama.cpp's own log."""

from __future__ import annotations

import logging

from selfcorrect.errors import BackendUnavailableError


def import_llama_cpp():
    try:
        import llama_cpp
    except ImportError as e:
        raise BackendUnavailableError(
            "the embedded backend needs llama-cpp-python, which is not installed",
            "install it with `pip install 'selfcorrect[embedded]'`",
        ) from e
    return llama_cpp


_log_callback = None


def route_llama_logs(llama_cpp) -> None:
    """Send llama.cpp's chatter to the `selfcorrect.llama` logger at DEBUG instead of stderr."""
    global _log_callback
    if _log_callback is not None:
        return
    llama_log = logging.getLogger("selfcorrect.llama")

    @llama_cpp.llama_log_callback
    def callback(level, text, user_data):
        if llama_log.isEnabledFor(logging.DEBUG):
            llama_log.debug(text.decode("utf-8", "replace").rstrip())

    _log_callback = callback  # a ctypes callback must outlive every call into C
    llama_cpp.llama_log_set(callback, None)

