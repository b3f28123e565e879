"""`python -m selfcorrect.models.llama_server ARGS`: llama-cpp-python's OpenAI-compatible
server (`python -m llama_cpp.server ARGS`), safe on CPUs whose AMX kernels crash.

llama.cpp moves weights into AMX buffers on Sapphire Rapids class CPUs, and its AMX matrix
multiply segfaults at the first decode there (ggml-org/llama.cpp#20824). The embedded
engine keeps weights in plain CPU buffers on such CPUs; this does the same for the server
(and `plain_cpu_buffers()` for any `llama_cpp.Llama` in this process).
"""

from __future__ import annotations

import runpy


def cpu_has_amx() -> bool:
    try:
        with open("/proc/cpuinfo") as f:
            return any(line.startswith("flags") and " amx_int8" in line for line in f)
    except OSError:
        return False


def plain_cpu_buffers() -> None:
    """Make llama-cpp-python load models without llama.cpp's extra (AMX) buffers, on CPUs
    with AMX; elsewhere nothing changes."""
    if not cpu_has_amx():
        return
    import llama_cpp.llama_cpp as bindings

    if getattr(bindings.llama_model_default_params, "plain_cpu_buffers", False):
        return
    original = bindings.llama_model_default_params

    def default_params():
        params = original()
        params.use_extra_bufts = False
        return params

    default_params.plain_cpu_buffers = True
    bindings.llama_model_default_params = default_params


if __name__ == "__main__":
    plain_cpu_buffers()
    runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
