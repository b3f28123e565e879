"""Isolated execution of untrusted code: bubblewrap namespaces, rlimits, and a test runner
whose verdict the program cannot forge (see harness.py and zygote.py)."""

from selfcorrect.sandbox.harness import (
    Limits,
    RunResult,
    Sandbox,
    SandboxUnavailable,
    TestCase,
    TestOutcome,
)

__all__ = ["Limits", "RunResult", "Sandbox", "SandboxUnavailable", "TestCase", "TestOutcome"]
